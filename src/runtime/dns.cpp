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

namespace {

std::string rcode_name(dns::rcode c) {
  switch (c) {
    case dns::rcode::noerror:
      return "NOERROR";
    case dns::rcode::formerr:
      return "FORMERR";
    case dns::rcode::servfail:
      return "SERVFAIL";
    case dns::rcode::nxdomain:
      return "NXDOMAIN";
    case dns::rcode::notimp:
      return "NOTIMP";
    case dns::rcode::refused:
      return "REFUSED";
    default:
      return "RCODE" + std::to_string(static_cast<int>(c));
  }
}

std::vector<udp::endpoint> local_upstream(const config::config& cfg,
                                          const std::vector<net::address>& resolvers) {
  std::vector<udp::endpoint> out;
  for (auto& u : cfg.dns_upstream) {
    if (u == "system") {
      for (auto& a : resolvers) out.emplace_back(a, 53);
    } else if (auto e = config::parse_endpoint(u)) {
      out.emplace_back(e->address, e->port.value_or(53));
    }
  }
  return out;
}

struct routes {
  dns::router router;
  std::vector<dns::profile_upstream> upstreams;
};

routes routes_of(const std::vector<std::shared_ptr<profile>>& profiles) {
  routes r;
  for (std::size_t i = 0; i < profiles.size(); ++i) {
    r.upstreams.push_back({profiles[i]->name(), profiles[i]->dns()});
    if (profiles[i]->dns())
      for (auto& d : profiles[i]->settings().dns.domains) r.router.add(d, i);
  }
  return r;
}

}  // namespace

struct dns_front::impl {
  asio::any_io_executor ex;
  std::vector<net::address> resolvers;
  std::vector<std::string> upstream_config;
  std::vector<std::shared_ptr<profile>> profiles;  // indexed as the server's routes are

  // The enabled profile of that name now (a query's answer may come after a reload).
  profile* named(const std::string& name) const {
    for (auto& p : profiles)
      if (p->name() == name) return p.get();
    return nullptr;
  }
  dns::router router;
  std::unique_ptr<dns::server> server;
  std::uint64_t cache_hits = 0;
  std::map<std::string, std::uint64_t> local_answers;

  socket_fn own_socket;

  std::shared_ptr<dns::upstream> make_local(const config::config& cfg) {
    auto eps = local_upstream(cfg, resolvers);
    if (eps.empty()) spdlog::warn("dns: no local upstream nameserver; other names get REFUSED");
    return eps.empty() ? nullptr
                       : std::make_shared<dns::udp_upstream>(
                             ex, eps, dns::udp_options{.mark = own_mark, .open = own_socket});
  }
};

dns_front::dns_front(std::unique_ptr<impl> i) : impl_(std::move(i)) {}
dns_front::~dns_front() = default;

std::unique_ptr<dns_front> dns_front::make(asio::any_io_executor ex, const config::config& cfg,
                                           const std::vector<asio::ip::address>& listen,
                                           const std::vector<std::shared_ptr<profile>>& profiles,
                                           learn_fn learn, socket_fn own_socket) {
  auto r = routes_of(profiles);
  if (r.router.empty()) return nullptr;
  auto i = std::make_unique<impl>();
  i->ex = ex;
  i->own_socket = std::move(own_socket);
  i->resolvers = read_resolv_conf("/etc/resolv.conf");
  i->upstream_config = cfg.dns_upstream;
  i->profiles = profiles;
  i->router = r.router;
  std::vector<udp::endpoint> eps;
  for (auto& a : listen) eps.emplace_back(a, cfg.dns_port);
  i->server = std::make_unique<dns::server>(ex, eps, i->make_local(cfg),
                                            dns::server_options{.cache_size = cfg.cache_size});
  i->server->set_profiles(std::move(r.router), std::move(r.upstreams));
  auto* st = i.get();
  i->server->on_answer([st, learn = std::move(learn)](const std::string& name,
                                                      const net::address& a, std::uint32_t ttl) {
    if (auto* p = st->named(name)) learn(*p, a, ttl);
  });
  i->server->on_query([st](const std::optional<std::string>& name, dns::rcode code, bool cached) {
    if (cached) ++st->cache_hits;
    if (!name)
      ++st->local_answers[rcode_name(code)];
    else if (auto* p = st->named(*name))
      ++p->dns_answers()[rcode_name(code)];
  });
  i->server->start();
  return std::unique_ptr<dns_front>(new dns_front(std::move(i)));
}

void dns_front::update(const config::config& cfg,
                       const std::vector<std::shared_ptr<profile>>& profiles,
                       const std::function<bool(std::string_view name)>& stale) {
  auto r = routes_of(profiles);
  // `stale` may ask owner(), which must still answer for the routes being replaced.
  impl_->server->set_profiles(r.router, std::move(r.upstreams), stale);
  impl_->profiles = profiles;
  impl_->router = std::move(r.router);
  if (cfg.dns_upstream != impl_->upstream_config) {
    impl_->upstream_config = cfg.dns_upstream;
    impl_->server->set_local(impl_->make_local(cfg));
  }
}

profile* dns_front::owner(std::string_view name) const {
  const auto id = impl_->router.match(name);
  return id && *id < impl_->profiles.size() ? impl_->profiles[*id].get() : nullptr;
}

std::uint16_t dns_front::port() const { return impl_->server->port(); }
std::uint64_t dns_front::cache_hits() const { return impl_->cache_hits; }
const std::map<std::string, std::uint64_t>& dns_front::local_answers() const {
  return impl_->local_answers;
}
const std::vector<net::address>& dns_front::system_resolvers() const { return impl_->resolvers; }
void dns_front::stop() { impl_->server->stop(); }

}  // namespace tprosshy::runtime
