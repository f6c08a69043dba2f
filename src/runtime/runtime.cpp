#include "runtime/runtime.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "net/interfaces.hpp"
#include "proxy/server.hpp"
#include "routing/table.hpp"
#include "runtime/dns.hpp"
#include "runtime/plan.hpp"
#include "tunnel/control_dir.hpp"

namespace tprosshy::runtime {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

namespace {

// What new flows are routed by: the table (routing ids are positions in the config) and
// the profile behind each id. Replaced as a whole, never edited in place, but for the
// addresses learned from DNS answers.
struct snapshot {
  routing::table table;
  std::vector<std::shared_ptr<profile>> by_id;  // null for a disabled profile
};

}  // namespace

struct runtime::impl {
  impl(asio::any_io_executor e, config::config c, nft::netlink& n)
      : ex(std::move(e)), cfg(std::move(c)), nl(n), changed(ex, 1), expiry(ex) {}

  asio::any_io_executor ex;
  config::config cfg;
  nft::netlink& nl;
  tunnel::control_dir dir;
  std::map<std::string, std::shared_ptr<profile>> profiles;  // by name: the one owner
  std::shared_ptr<snapshot> current;
  std::optional<proxy::server> server;
  std::unique_ptr<dns_front> dns;
  bool installed = false, stopping = false;
  std::size_t running = 0;  // profiles whose run() has not ended
  // "Something changed" (a verdict, a nameserver, a profile's end): each step that waits
  // on the profiles re-checks its condition when this fires.
  asio::experimental::channel<void(error_code)> changed;
  asio::steady_timer expiry;

  std::vector<std::shared_ptr<profile>> in_order() const {
    std::vector<std::shared_ptr<profile>> out;
    for (auto& p : current->by_id)
      if (p) out.push_back(p);
    return out;
  }

  void on_event(profile&, profile::event e) {
    if (e == profile::event::bypass && installed && !stopping) {
      // A server found only now (DNS was not up yet): its bypass rule goes in at once.
      try {
        install();
      } catch (const std::exception& x) {
        spdlog::error("cannot update the nftables ruleset: {}", x.what());
      }
    }
    changed.try_send(error_code{});
  }

  std::optional<proxy::route> route(const tcp::endpoint& dst) {
    const auto snap = current;
    const auto id = snap->table.lookup(dst.address());
    if (!id || *id >= snap->by_id.size() || !snap->by_id[*id]) return std::nullopt;
    const auto& p = snap->by_id[*id];
    auto t = p->serving();
    if (!t) return std::nullopt;
    return proxy::route{p->name(), std::move(t)};
  }

  void count(const proxy::route& r, const tunnel::flow_result& res) {
    if (auto it = profiles.find(r.profile); it != profiles.end()) it->second->count(res);
    if (stopping) changed.try_send(error_code{});
  }

  // An address a profile's nameserver answered routes through that profile for its TTL,
  // in the dispatcher and in the kernel's timeout set alike.
  void learn(profile& p, const net::address& a, std::uint32_t ttl) {
    if (!p.settings().dns.learn_routes || ttl == 0) return;
    const auto& by_id = current->by_id;
    const auto it =
        std::find_if(by_id.begin(), by_id.end(), [&](auto& q) { return q.get() == &p; });
    if (it == by_id.end()) return;
    current->table.learn(a, static_cast<routing::profile_id>(it - by_id.begin()),
                         routing::clock::now() + std::chrono::seconds(ttl));
    if (!installed) return;
    try {
      nl.learn(p.name(), a, std::chrono::seconds(ttl));
    } catch (const std::exception& e) {
      spdlog::warn("[{}] cannot add learned address {}: {}", p.name(), a.to_string(), e.what());
    }
  }

  asio::awaitable<void> expire_learned() {
    while (!stopping) {
      expiry.expires_after(10s);
      co_await expiry.async_wait(as_tuple(use_awaitable));
      current->table.expire(routing::clock::now());
    }
  }

  void install() {
    std::vector<nft::endpoint> bypass;
    for (auto& p : in_order()) bypass.insert(bypass.end(), p->bypass().begin(), p->bypass().end());
    ports p{server->port(), dns ? std::optional(dns->port()) : std::nullopt};
    nl.install(make_ruleset(cfg, current->table, bypass, p,
                            dns ? dns->system_resolvers() : std::vector<net::address>{}));
    installed = true;
  }

  // Waits for `done()` or the deadline, re-checking whenever a profile reports.
  template <class Pred>
  asio::awaitable<bool> until(Pred done, asio::steady_timer::time_point deadline) {
    asio::steady_timer limit(ex, deadline);
    while (!done()) {
      auto r = co_await (changed.async_receive(as_tuple(use_awaitable)) ||
                         limit.async_wait(as_tuple(use_awaitable)));
      if (r.index() == 1) co_return done();
    }
    co_return true;
  }
};

runtime::runtime(asio::any_io_executor ex, config::config cfg, nft::netlink& nl)
    : impl_(std::make_unique<impl>(std::move(ex), std::move(cfg), nl)) {
  auto& i = *impl_;
  auto snap = std::make_shared<snapshot>();
  snap->table = make_table(i.cfg);
  for (auto& pc : i.cfg.profiles) {
    if (!pc.enabled) {
      snap->by_id.push_back(nullptr);
      continue;
    }
    auto p = std::make_shared<profile>(i.ex, pc, i.dir.socket(pc.name),
                                       [&i](profile& p, profile::event e) { i.on_event(p, e); });
    i.profiles.emplace(pc.name, p);
    snap->by_id.push_back(std::move(p));
  }
  i.current = std::move(snap);
}

runtime::~runtime() = default;

void runtime::listen() {
  auto& i = *impl_;
  // Gateway mode listens on the LAN interfaces' own addresses (where the kernel redirects
  // their traffic to) and on loopback, never on a wildcard address.
  std::vector<tcp::endpoint> eps;
  auto add = [&](const net::address& a) {
    tcp::endpoint ep(a, i.cfg.tcp_port);
    if (std::find(eps.begin(), eps.end(), ep) == eps.end() && net::can_bind(a)) eps.push_back(ep);
  };
  add(i.cfg.listen_address.value_or(asio::ip::make_address("127.0.0.1")));
  add(asio::ip::make_address("::1"));
  if (i.cfg.mode == config::run_mode::gateway && !i.cfg.listen_address)
    for (auto& a : net::interface_addresses(i.cfg.gateway_interfaces)) add(a);
  try {
    i.server.emplace(
        i.ex, eps, [&i](const tcp::endpoint& dst) { return i.route(dst); },
        [&i](const proxy::route& r, const tunnel::flow_result& res) { i.count(r, res); });
  } catch (const boost::system::system_error& e) {
    throw listen_error("cannot listen on TCP port " + std::to_string(i.cfg.tcp_port) + ": " +
                       e.code().message());
  }
  i.server->start();
  std::vector<asio::ip::address> addrs;
  for (auto& ep : i.server->local_endpoints()) addrs.push_back(ep.address());
  try {
    i.dns = dns_front::make(
        i.ex, i.cfg, addrs, i.in_order(),
        [&i](profile& p, const net::address& a, std::uint32_t ttl) { i.learn(p, a, ttl); });
  } catch (const boost::system::system_error& e) {
    throw listen_error("cannot listen on DNS port " + std::to_string(i.cfg.dns_port) + ": " +
                       e.code().message());
  }
  asio::co_spawn(i.ex, i.expire_learned(), asio::detached);
}

void runtime::start() {
  auto& i = *impl_;
  for (auto& p : i.in_order()) {
    ++i.running;
    asio::co_spawn(i.ex, p->run(), [&i, name = p->name()](std::exception_ptr e) {
      --i.running;
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          spdlog::error("[{}] stopped by an error: {}", name, x.what());
        }
      }
      i.changed.try_send(error_code{});
    });
  }
}

asio::awaitable<void> runtime::first_verdicts() {
  auto& i = *impl_;
  co_await i.until(
      [&i] {
        return std::all_of(i.profiles.begin(), i.profiles.end(),
                           [](auto& kv) { return kv.second->decided(); });
      },
      asio::steady_timer::time_point::max());
}

asio::awaitable<void> runtime::nameservers_known(std::chrono::milliseconds limit) {
  auto& i = *impl_;
  co_await i.until(
      [&i] {
        return std::none_of(i.profiles.begin(), i.profiles.end(),
                            [](auto& kv) { return kv.second->reading_nameserver(); });
      },
      asio::steady_timer::clock_type::now() + limit);
}

void runtime::install() { impl_->install(); }

asio::awaitable<void> runtime::stop() {
  auto& i = *impl_;
  i.stopping = true;
  i.expiry.cancel();
  if (i.dns) i.dns->stop();
  if (i.server) i.server->stop();
  for (auto& [name, p] : i.profiles) p->stop();
  // ssh gets SIGTERM, then SIGKILL after half a second; its flows are reset as it goes.
  const auto deadline = asio::steady_timer::clock_type::now() + 5s;
  co_await i.until([&i] { return i.running == 0; }, deadline);
  if (i.server) co_await i.until([&i] { return i.server->active_flows() == 0; }, deadline);
  if (i.installed) {
    try {
      i.nl.remove();
    } catch (const std::exception& e) {
      spdlog::error("cannot remove the nftables table: {}", e.what());
    }
    i.installed = false;
  }
}

std::size_t runtime::enabled() const { return impl_->profiles.size(); }

std::size_t runtime::up() const {
  return std::count_if(impl_->profiles.begin(), impl_->profiles.end(),
                       [](auto& kv) { return kv.second->up(); });
}

std::vector<const profile*> runtime::down() const {
  std::vector<const profile*> out;
  for (auto& p : impl_->in_order())
    if (!p->up()) out.push_back(p.get());
  return out;
}

std::uint16_t runtime::tcp_port() const { return impl_->server ? impl_->server->port() : 0; }

std::optional<std::uint16_t> runtime::dns_port() const {
  return impl_->dns ? std::optional(impl_->dns->port()) : std::nullopt;
}

const config::config& runtime::config() const { return impl_->cfg; }

}  // namespace tprosshy::runtime
