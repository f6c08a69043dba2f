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
#include "proxy/socks_client.hpp"
#include "tunnel/ssh.hpp"

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
  const config::profile* profile;
  std::optional<tcp::endpoint> ep;
};

asio::awaitable<tcp::endpoint> discover(const config::profile& p) {
  // No awk or anything else: cat is on every host, and the parsing happens here.
  std::vector<std::string> cmd{"cat", "/etc/resolv.conf"};
  auto text = co_await tunnel::remote_output(p.ssh_args, p.host, cmd);
  auto servers = dns::parse_resolv_conf(text);
  if (servers.empty()) throw std::runtime_error("the remote /etc/resolv.conf names no nameserver");
  co_return tcp::endpoint(servers.front(), 53);
}

}  // namespace

struct dns_front::impl {
  explicit impl(asio::any_io_executor ex) : done(ex, asio::steady_timer::time_point::max()) {}
  std::vector<net::address> resolvers;
  std::vector<remote_ns> ns;
  std::unique_ptr<dns::server> server;
  std::size_t discovering = 0;
  asio::steady_timer done;  // cancelled when the last discovery ends
};

dns_front::dns_front(std::unique_ptr<impl> i) : impl_(std::move(i)) {}
dns_front::~dns_front() = default;

std::unique_ptr<dns_front> dns_front::make(asio::any_io_executor ex, const config::config& cfg,
                                           const std::vector<asio::ip::address>& listen,
                                           socks_fn socks, learn_fn learn) {
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
    auto connect = [slot, id, socks]() -> asio::awaitable<tcp::socket> {
      auto s = socks(id);
      if (!s) throw std::runtime_error("tunnel is down");
      if (!slot->ep) {
        slot->ep = co_await discover(*slot->profile);
        spdlog::info("[{}] dns: remote nameserver {}", slot->profile->name,
                     slot->ep->address().to_string());
      }
      // DNS rides the tunnel that is already up, with no extra port or ssh option.
      tcp::socket sock(co_await asio::this_coro::executor);
      auto why = co_await proxy::socks_connect(sock, *s, *slot->ep);
      if (!why.empty()) throw std::runtime_error(why);
      co_return sock;
    };
    profiles[id] = std::make_shared<dns::tcp_upstream>(ex, connect);
    if (!slot->ep) {
      // Find the nameserver while the tunnel logs in, so the first query does not wait.
      ++i->discovering;
      asio::co_spawn(ex, discover(p), [slot, st = i.get()](std::exception_ptr e, tcp::endpoint ep) {
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
          spdlog::warn("[{}] dns: cannot read the remote /etc/resolv.conf: {}", slot->profile->name,
                       x.what());
        }
      });
    }
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
