#include "app/dns_front.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "app/plan.hpp"
#include "dns/resolv_conf.hpp"
#include "dns/router.hpp"
#include "dns/server.hpp"
#include "dns/upstream.hpp"

namespace tprosshy::app {

namespace asio = boost::asio;
using asio::use_awaitable;
using asio::ip::tcp;
using asio::ip::udp;

std::vector<net::address> read_resolv_conf(const char* path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return dns::parse_resolv_conf(text.str());
}

namespace {

// A profile's nameserver: configured, or the first one of the host's own resolv.conf.
struct remote_ns {
  const config::profile* profile = nullptr;
  std::optional<tcp::endpoint> ep;
  bool reading = false;
};

asio::awaitable<tcp::endpoint> discover(tunnel::tunnel& t) {
  // No awk or anything else: cat is on every host, and the parsing happens here.
  auto text = co_await t.exec("cat /etc/resolv.conf", std::chrono::seconds(10));
  auto servers = dns::parse_resolv_conf(text);
  if (servers.empty()) throw std::runtime_error("the remote /etc/resolv.conf names no nameserver");
  co_return tcp::endpoint(servers.front(), 53);
}

}  // namespace

struct dns_front::impl {
  explicit impl(asio::any_io_executor e) : ex(e), done(e, asio::steady_timer::time_point::max()) {}
  asio::any_io_executor ex;
  std::vector<net::address> resolvers;
  std::vector<remote_ns> ns;
  tunnel_fn tunnel;
  std::unique_ptr<dns::server> server;
  std::size_t discovering = 0;
  asio::steady_timer done;  // cancelled when the last discovery ends
};

dns_front::dns_front(std::unique_ptr<impl> i) : impl_(std::move(i)) {}
dns_front::~dns_front() = default;

std::unique_ptr<dns_front> dns_front::make(asio::any_io_executor ex, const config::config& cfg,
                                           const std::vector<asio::ip::address>& listen,
                                           tunnel_fn tunnel, learn_fn learn) {
  dns::router router;
  for (std::size_t id = 0; id < cfg.profiles.size(); ++id)
    if (cfg.profiles[id].enabled)
      for (auto& d : cfg.profiles[id].dns.domains) router.add(d, id);
  if (router.empty()) return nullptr;

  auto i = std::make_unique<impl>(ex);
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

  i->ns.resize(cfg.profiles.size());
  i->tunnel = std::move(tunnel);
  std::vector<std::shared_ptr<dns::upstream>> profiles(cfg.profiles.size());
  for (std::size_t id = 0; id < cfg.profiles.size(); ++id) {
    auto& p = cfg.profiles[id];
    if (!p.enabled || p.dns.domains.empty()) continue;
    auto* slot = &i->ns[id];
    slot->profile = &p;
    if (p.dns.nameserver != "auto") {
      auto e = config::parse_endpoint(p.dns.nameserver);
      if (e) slot->ep = tcp::endpoint(e->address, e->port.value_or(53));
    }
    auto connect = [slot, id, st = i.get()]() -> asio::awaitable<dns::link> {
      auto t = st->tunnel(id);
      if (!t) throw std::runtime_error("tunnel is down");
      if (!slot->ep) {
        slot->ep = co_await discover(*t);
        spdlog::info("[{}] dns: remote nameserver {}", slot->profile->name,
                     slot->ep->address().to_string());
      }
      auto s = co_await t->open(*slot->ep);
      co_return dns::link{asio::generic::stream_protocol::socket(std::move(s.data)),
                          std::make_shared<tunnel::mux::socket>(std::move(s.control))};
    };
    profiles[id] = std::make_shared<dns::tcp_upstream>(ex, connect);
  }

  std::vector<udp::endpoint> eps;
  for (auto& a : listen) eps.emplace_back(a, cfg.dns_port);
  i->server = std::make_unique<dns::server>(ex, eps, local,
                                            dns::server_options{.cache_size = cfg.cache_size});
  i->server->set_profiles(std::move(router), std::move(profiles));
  i->server->on_answer(std::move(learn));
  i->server->start();
  return std::unique_ptr<dns_front>(new dns_front(std::move(i)));
}

void dns_front::tunnel_up(std::size_t id) {
  if (id >= impl_->ns.size()) return;
  auto* slot = &impl_->ns[id];
  if (!slot->profile || slot->ep || slot->reading) return;
  auto t = impl_->tunnel(id);
  if (!t) return;
  // Read the nameserver now, so the first query does not wait for it.
  slot->reading = true;
  ++impl_->discovering;
  asio::co_spawn(impl_->ex, discover(*t),
                 [slot, t, st = impl_.get()](std::exception_ptr e, tcp::endpoint ep) {
                   slot->reading = false;
                   if (--st->discovering == 0) st->done.cancel();
                   if (!e) {
                     if (!slot->ep)
                       spdlog::info("[{}] dns: remote nameserver {}", slot->profile->name,
                                    ep.address().to_string());
                     slot->ep = ep;
                     return;
                   }
                   try {
                     std::rethrow_exception(e);
                   } catch (const std::exception& x) {
                     spdlog::warn("[{}] dns: cannot read the remote /etc/resolv.conf: {}",
                                  slot->profile->name, x.what());
                   }
                 });
}

asio::awaitable<void> dns_front::discovered(std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (impl_->discovering > 0 && std::chrono::steady_clock::now() < deadline) {
    impl_->done.expires_at(deadline);
    co_await impl_->done.async_wait(asio::as_tuple(use_awaitable));
  }
}

std::uint16_t dns_front::port() const { return impl_->server->port(); }
const std::vector<net::address>& dns_front::system_resolvers() const { return impl_->resolvers; }
void dns_front::stop() { impl_->server->stop(); }

}  // namespace tprosshy::app
