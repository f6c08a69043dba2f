#include "runtime/profile.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <random>

#include "dns/resolv_conf.hpp"
#include "tunnel/ssh.hpp"

namespace tprosshy::runtime {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

profile::profile(asio::any_io_executor ex, config::profile settings, std::string control_path,
                 observer on_event, std::shared_ptr<counters> totals)
    : ex_(std::move(ex)),
      settings_(std::move(settings)),
      control_path_(std::move(control_path)),
      on_event_(std::move(on_event)),
      retry_(ex_),
      drained_(ex_, asio::steady_timer::time_point::max()),
      stats_(totals ? std::move(totals) : std::make_shared<counters>()) {
  if (settings_.dns.nameserver != "auto")
    if (auto e = config::parse_endpoint(settings_.dns.nameserver))
      nameserver_ = tcp::endpoint(e->address, e->port.value_or(53));
  make_dns();
}

void profile::make_dns() {
  if (dns_ || !settings_.enabled || settings_.dns.domains.empty()) return;
  // One pipelined DNS-over-TCP connection at a time, each a channel through the master.
  dns_ = std::make_shared<dns::tcp_upstream>(
      ex_, [this, alive = alive_]() -> asio::awaitable<dns::link> {
        auto t = *alive ? serving() : nullptr;
        if (!t) throw std::runtime_error("tunnel is down");
        const auto ns = co_await nameserver(t);
        auto s = co_await t->open(ns);
        co_return dns::link{asio::generic::stream_protocol::socket(std::move(s.data)),
                            std::make_shared<tunnel::mux::socket>(std::move(s.control))};
      });
}

bool profile::same_connection(const config::profile& other) const {
  return settings_.host == other.host && settings_.ssh_args == other.ssh_args;
}

void profile::update(config::profile settings) {
  const bool new_ns = settings.dns.nameserver != settings_.dns.nameserver;
  settings_ = std::move(settings);
  if (new_ns) {
    nameserver_.reset();
    if (settings_.dns.nameserver != "auto")
      if (auto e = config::parse_endpoint(settings_.dns.nameserver))
        nameserver_ = tcp::endpoint(e->address, e->port.value_or(53));
  }
  make_dns();
}

asio::awaitable<void> profile::locate(std::chrono::milliseconds limit) {
  using namespace asio::experimental::awaitable_operators;
  auto find = [this]() -> asio::awaitable<std::optional<std::vector<tcp::endpoint>>> {
    try {
      co_return co_await tunnel::server_endpoints(settings_.ssh_args, settings_.host);
    } catch (const std::exception& e) {
      last_error_ = e.what();
      co_return std::nullopt;
    }
  };
  asio::steady_timer t(ex_, limit);
  auto r = co_await (find() || t.async_wait(as_tuple(use_awaitable)));
  if (r.index() != 0 || !std::get<0>(r)) co_return;
  for (auto& ep : *std::get<0>(r)) bypass_.push_back({ep.address(), ep.port(), settings_.name});
  located_ = true;
}

asio::awaitable<void> profile::drain(std::chrono::milliseconds limit,
                                     std::weak_ptr<profile> successor) {
  auto alive = alive_;
  draining_ = true;
  successor_ = std::move(successor);
  const auto deadline = std::chrono::steady_clock::now() + limit;
  bool told = false;
  // It carries the new flows of its name too until its successor is up.
  while (!done_draining() && std::chrono::steady_clock::now() < deadline) {
    if (!told && flows() > 0) {
      told = true;
      spdlog::info("[{}] draining {} flows on ssh pid {} (at most {} s)", settings_.name, flows(),
                   ssh_pid(), limit.count() / 1000);
    }
    drained_.expires_at(deadline);
    co_await drained_.async_wait(as_tuple(use_awaitable));
    if (!*alive || stopping_) co_return;
  }
  if (flows() > 0)
    spdlog::warn("[{}] drain time is up: resetting {} flows", settings_.name, flows());
  stop();
}

bool profile::done_draining() const {
  auto next = successor_.lock();
  return flows() == 0 && (!next || next->up() || next->stopped());
}

profile::~profile() {
  *alive_ = false;
  stop();
}

void profile::notify(event e) {
  if (on_event_) on_event_(*this, e);
}

asio::awaitable<void> profile::run() {
  auto alive = alive_;
  tunnel::options o;
  o.profile = settings_.name;
  o.destination = settings_.host;
  o.ssh_args = settings_.ssh_args;
  o.control_path = control_path_;
  // Where ssh connects is asked of ssh itself; a failure (no DNS yet at boot, a broken
  // ssh_config) is retried like a failed ssh.
  std::mt19937 rng(std::random_device{}());
  auto delay = o.backoff_min;
  while (!stopping_ && !located_) {
    try {
      for (auto& ep : co_await tunnel::server_endpoints(settings_.ssh_args, settings_.host))
        bypass_.push_back({ep.address(), ep.port(), settings_.name});
      break;
    } catch (const std::exception& e) {
      last_error_ = e.what();
    }
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    const auto wait = std::chrono::milliseconds(static_cast<long>(delay.count() * jitter(rng)));
    spdlog::warn("[{}] cannot find its ssh server: {}; retrying in {:.1f} s", settings_.name,
                 last_error_, wait.count() / 1000.0);
    if (!decided_) {
      decided_ = true;
      notify(event::down);
    }
    retry_.expires_after(wait);
    co_await retry_.async_wait(as_tuple(use_awaitable));
    if (!*alive) co_return;
    delay = std::min(delay * 2, o.backoff_max);
  }
  if (!stopping_) {
    notify(event::bypass);
    tunnel_ = std::make_shared<tunnel::tunnel>(
        ex_, o, [this](tunnel::state s, const std::string& why) { on_tunnel(s, why); });
    auto t = tunnel_;
    co_await t->run();
    if (!*alive) co_return;
  }
  ended_ = true;
}

void profile::on_tunnel(tunnel::state s, const std::string& why) {
  if (s == tunnel::state::up) {
    last_error_.clear();
    was_up_ = true;
    decided_ = true;
    up_since_ = std::chrono::system_clock::now();
    spdlog::info("[{}] tunnel up (ssh pid {})", settings_.name, tunnel_->pid());
    if (dns_ && !nameserver_ && !reading_)
      asio::co_spawn(ex_, read_nameserver(tunnel_), asio::detached);
    notify(event::up);
  } else if (s == tunnel::state::down) {
    last_error_ = why.empty() ? "ssh exited" : why;
    up_since_.reset();
    if (was_up_) ++stats_->restarts;
    was_up_ = false;
    spdlog::warn("[{}] tunnel down: {}", settings_.name, last_error_);
    decided_ = true;
    notify(event::down);
  }
}

asio::awaitable<tcp::endpoint> profile::nameserver(std::shared_ptr<tunnel::tunnel> t) {
  if (nameserver_) co_return *nameserver_;
  // No awk or anything else: cat is on every host, and the parsing happens here.
  auto text = co_await t->exec("cat /etc/resolv.conf", std::chrono::seconds(10));
  auto servers = dns::parse_resolv_conf(text);
  if (servers.empty()) throw std::runtime_error("the remote /etc/resolv.conf names no nameserver");
  if (!nameserver_) {
    nameserver_ = tcp::endpoint(servers.front(), 53);
    spdlog::info("[{}] dns: remote nameserver {}", settings_.name,
                 nameserver_->address().to_string());
  }
  co_return *nameserver_;
}

asio::awaitable<void> profile::read_nameserver(std::shared_ptr<tunnel::tunnel> t) {
  auto alive = alive_;
  reading_ = true;
  std::string failed;
  try {
    co_await nameserver(t);
  } catch (const std::exception& e) {
    failed = e.what();
  }
  if (!*alive) co_return;
  if (!failed.empty())
    spdlog::warn("[{}] dns: cannot read the remote /etc/resolv.conf: {}", settings_.name, failed);
  reading_ = false;
  notify(event::nameserver);
}

void profile::stop() {
  if (stopping_) return;
  stopping_ = true;
  retry_.cancel();
  drained_.cancel();
  if (tunnel_)
    tunnel_->stop();
  else
    ended_ = true;
}

std::shared_ptr<tunnel::tunnel> profile::serving() const {
  return tunnel_ && tunnel_->up() ? tunnel_ : nullptr;
}

std::shared_ptr<tunnel::tunnel> profile::carrier() const {
  if (auto t = serving()) return t;
  auto p = predecessor_.lock();
  return p ? p->serving() : nullptr;
}

void profile::replaces(const std::shared_ptr<profile>& old) {
  // The one that carries now: `old` itself, or what it was still waiting on.
  predecessor_ = old->serving() ? old : old->predecessor_;
}

std::size_t profile::flows() const { return tunnel_ ? tunnel_->flows() : 0; }

void profile::count(const tunnel::flow_result& r) {
  if (!r.opened)
    ++stats_->flows_refused;
  else if (r.reset)
    ++stats_->flows_reset;
  else
    ++stats_->flows_ok;
  stats_->bytes_up += r.up;
  stats_->bytes_down += r.down;
}

void profile::poke() {
  if (draining_ && done_draining()) drained_.cancel();
}

}  // namespace tprosshy::runtime
