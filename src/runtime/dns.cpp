#include "runtime/dns.hpp"

#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>

#include "dns/resolv_conf.hpp"
#include "dns/router.hpp"
#include "dns/server.hpp"
#include "runtime/plan.hpp"

namespace tprosshy::runtime {

namespace asio = boost::asio;
using asio::ip::udp;

std::vector<net::address> read_resolv_conf(const char* path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return dns::parse_resolv_conf(text.str());
}

struct dns_front::impl {
  std::vector<net::address> resolvers;
  std::unique_ptr<dns::server> server;
};

dns_front::dns_front(std::unique_ptr<impl> i) : impl_(std::move(i)) {}
dns_front::~dns_front() = default;

std::unique_ptr<dns_front> dns_front::make(asio::any_io_executor ex, const config::config& cfg,
                                           const std::vector<asio::ip::address>& listen,
                                           const std::vector<std::shared_ptr<profile>>& profiles,
                                           learn_fn learn) {
  dns::router router;
  std::vector<std::shared_ptr<dns::upstream>> upstreams;
  for (std::size_t i = 0; i < profiles.size(); ++i) {
    upstreams.push_back(profiles[i]->dns());
    if (profiles[i]->dns())
      for (auto& d : profiles[i]->settings().dns.domains) router.add(d, i);
  }
  if (router.empty()) return nullptr;

  auto i = std::make_unique<impl>();
  i->resolvers = read_resolv_conf("/etc/resolv.conf");
  std::vector<udp::endpoint> upstream;
  for (auto& u : cfg.dns_upstream) {
    if (u == "system") {
      for (auto& a : i->resolvers) upstream.emplace_back(a, 53);
    } else if (auto e = config::parse_endpoint(u)) {
      upstream.emplace_back(e->address, e->port.value_or(53));
    }
  }
  if (upstream.empty()) spdlog::warn("dns: no local upstream nameserver; other names get REFUSED");
  auto local = upstream.empty() ? nullptr
                                : std::make_shared<dns::udp_upstream>(
                                      ex, upstream, dns::udp_options{.mark = own_mark});
  std::vector<udp::endpoint> eps;
  for (auto& a : listen) eps.emplace_back(a, cfg.dns_port);
  i->server = std::make_unique<dns::server>(ex, eps, local,
                                            dns::server_options{.cache_size = cfg.cache_size});
  i->server->set_profiles(std::move(router), std::move(upstreams));
  i->server->on_answer([profiles, learn = std::move(learn)](std::size_t id, const net::address& a,
                                                            std::uint32_t ttl) {
    if (id < profiles.size()) learn(*profiles[id], a, ttl);
  });
  i->server->start();
  return std::unique_ptr<dns_front>(new dns_front(std::move(i)));
}

std::uint16_t dns_front::port() const { return impl_->server->port(); }
const std::vector<net::address>& dns_front::system_resolvers() const { return impl_->resolvers; }
void dns_front::stop() { impl_->server->stop(); }

}  // namespace tprosshy::runtime
