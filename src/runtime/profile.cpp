#include "runtime/profile.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fstream>
#include <random>

#include "dns/resolv_conf.hpp"
#include "runtime/failover.hpp"
#include "runtime/plan.hpp"
#include "tunnel/ssh.hpp"

namespace tprosshy::runtime {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

// An earlier host takes new flows back only after it has been healthy this long, so a host
// that flaps does not drag the flows with it.
constexpr auto failback_after = 30s;
// Pool members of one host start this far apart, so sshd's MaxStartups is not tripped;
// backup hosts start behind the first, which usually wins the race to serve.
constexpr auto member_stagger = 200ms;
constexpr auto backup_delay = 500ms;
// A nameserver answers one TCP connection's queries one at a time (dnsmasq does), so a
// slow answer holds up those behind it: a few connections per ssh let them overlap.
constexpr std::size_t dns_connections_per_member = 4;
constexpr std::size_t dns_spill_at = 4;  // queries in flight before the next one is used

// Each query on the first of a pool's DNS connections with fewer than dns_spill_at in
// flight, else the least busy: light traffic keeps to one connection, a burst spreads.
class pooled_upstream : public dns::upstream {
 public:
  explicit pooled_upstream(std::vector<std::shared_ptr<dns::tcp_upstream>> each)
      : each_(std::move(each)) {}
  asio::awaitable<std::optional<dns::bytes>> query(dns::bytes q) override {
    auto best = std::find_if(each_.begin(), each_.end(),
                             [](auto& u) { return u->in_flight() < dns_spill_at; });
    if (best == each_.end())
      best = std::min_element(each_.begin(), each_.end(),
                              [](auto& a, auto& b) { return a->in_flight() < b->in_flight(); });
    co_return co_await (*best)->query(std::move(q));
  }

 private:
  std::vector<std::shared_ptr<dns::tcp_upstream>> each_;
};

asio::awaitable<void> sleep_for(std::chrono::steady_clock::duration d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(as_tuple(use_awaitable));
}

}  // namespace

profile::profile(asio::any_io_executor ex, config::profile settings, ssh_home home,
                 observer on_event, std::shared_ptr<counters> totals)
    : ex_(std::move(ex)),
      settings_(std::move(settings)),
      home_(std::move(home)),
      on_event_(std::move(on_event)),
      drained_(ex_, asio::steady_timer::time_point::max()),
      stats_(totals ? std::move(totals) : std::make_shared<counters>()) {
  if (settings_.hosts.empty()) settings_.hosts.push_back(settings_.host);
  for (std::size_t h = 0; h < settings_.hosts.size(); ++h)
    for (std::size_t m = 0; m < std::max(1u, settings_.pool); ++m) members_.push_back({h, m});
  located_.assign(settings_.hosts.size(), false);
  for (std::size_t h = 0; h < settings_.hosts.size(); ++h)
    retry_.push_back(std::make_unique<asio::steady_timer>(ex_));
  failed_once_.assign(settings_.hosts.size(), false);
  if (settings_.dns.nameserver != "auto")
    if (auto e = config::parse_endpoint(settings_.dns.nameserver))
      nameserver_ = tcp::endpoint(e->address, e->port.value_or(53));
  make_dns();
}

profile::~profile() {
  *alive_ = false;
  stop();
}

std::string profile::member_name(const member& m) const {
  if (members_.size() == 1) return settings_.name;
  return settings_.name + " " + settings_.hosts[m.host] +
         (settings_.pool > 1 ? "#" + std::to_string(m.index + 1) : "");
}

void profile::make_dns() {
  if (dns_ || !settings_.enabled || settings_.dns.domains.empty()) return;
  // Pipelined DNS-over-TCP connections spread over the pool's members, each a channel
  // through the serving host's `slot`-th master while it serves (another one while not).
  auto connection = [this, alive = alive_](std::size_t slot) {
    return [this, alive, slot]() -> asio::awaitable<dns::link> {
      std::shared_ptr<tunnel::tunnel> t;
      if (*alive) {
        t = serving();
        const auto host = serving_host_.value_or(0);
        for (auto& m : members_)
          if (m.host == host && m.index == slot && m.tunnel && m.tunnel->up()) t = m.tunnel;
      }
      if (!t) throw std::runtime_error("tunnel is down");
      const auto ns = co_await nameserver(t);
      auto s = co_await t->open(ns);
      co_return dns::link{asio::generic::stream_protocol::socket(std::move(s.data)),
                          std::make_shared<tunnel::mux::socket>(std::move(s.control))};
    };
  };
  const std::size_t pool = std::max(1u, settings_.pool);
  std::vector<std::shared_ptr<dns::tcp_upstream>> each;
  for (std::size_t i = 0; i < pool * dns_connections_per_member; ++i)
    each.push_back(std::make_shared<dns::tcp_upstream>(ex_, connection(i % pool)));
  dns_ = std::make_shared<pooled_upstream>(std::move(each));
}

std::vector<std::string> profile::ssh_args() const {
  if (settings_.host_keys.empty()) return settings_.ssh_args;
  // Pinned keys: a private known_hosts under one alias for every host of the profile, and
  // strict checking, ahead of everything the user's files or ssh_args say.
  const auto& file = home_.known_hosts;
  const auto alias = "tprosshy." + settings_.name;
  {
    std::ofstream out(file, std::ios::trunc);
    for (auto& k : settings_.host_keys) out << alias << " " << k << "\n";
  }
  // Public keys; another account's ssh reads them but cannot change them.
  ::chmod(file.c_str(), home_.as ? 0644 : 0600);
  std::vector<std::string> args{"-o", "UserKnownHostsFile=" + file,
                                "-o", "GlobalKnownHostsFile=/dev/null",
                                "-o", "StrictHostKeyChecking=yes",
                                "-o", "HostKeyAlias=" + alias,
                                "-o", "CheckHostIP=no",
                                "-o", "UpdateHostKeys=no"};
  args.insert(args.end(), settings_.ssh_args.begin(), settings_.ssh_args.end());
  return args;
}

void profile::evicted(std::size_t limit) {
  ++stats_->learned_evicted;
  const auto now = std::chrono::steady_clock::now();
  if (evicted_logged_ && now - *evicted_logged_ < std::chrono::minutes(1)) return;
  evicted_logged_ = now;
  spdlog::warn("[{}] {} learned addresses, its dns.learn_limit: the oldest go first ({} so far)",
               settings_.name, limit, stats_->learned_evicted);
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

asio::awaitable<std::vector<tcp::endpoint>> profile::servers(std::size_t host) const {
  return tunnel::server_endpoints(settings_.ssh_args, settings_.hosts[host], home_.as,
                                  !settings_.host_keys.empty());
}

asio::awaitable<void> profile::locate(std::chrono::milliseconds limit) {
  using namespace asio::experimental::awaitable_operators;
  for (std::size_t h = 0; h < settings_.hosts.size(); ++h) {
    if (located_[h]) continue;
    auto find = [&]() -> asio::awaitable<std::optional<std::vector<tcp::endpoint>>> {
      try {
        co_return co_await servers(h);
      } catch (const std::exception& e) {
        last_error_ = e.what();
        co_return std::nullopt;
      }
    };
    asio::steady_timer t(ex_, limit);
    auto r = co_await (find() || t.async_wait(as_tuple(use_awaitable)));
    if (r.index() != 0 || !std::get<0>(r)) continue;
    for (auto& ep : *std::get<0>(r)) bypass_.push_back({ep.address(), ep.port(), settings_.name});
    located_[h] = true;
  }
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
      spdlog::info("[{}] draining {} flows on its old ssh (at most {} s)", settings_.name, flows(),
                   limit.count() / 1000);
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
  // Until its successor serves, it carries new flows of its name too, if it can.
  auto next = successor_.lock();
  return flows() == 0 && (!next || next->up() || next->stopped() || !up());
}

void profile::notify(event e) {
  if (on_event_) on_event_(*this, e);
}

asio::awaitable<void> profile::run() {
  auto alive = alive_;
  asio::experimental::channel<void(error_code)> ended(ex_, settings_.hosts.size());
  for (std::size_t h = 0; h < settings_.hosts.size(); ++h)
    asio::co_spawn(ex_, run_host(h),
                   [&ended](std::exception_ptr) { ended.try_send(error_code{}); });
  for (std::size_t h = 0; h < settings_.hosts.size(); ++h)
    co_await ended.async_receive(as_tuple(use_awaitable));
  if (!*alive) co_return;
  ended_ = true;
}

asio::awaitable<bool> profile::find_host(std::size_t host) {
  // Where ssh connects is asked of ssh itself; a failure (no DNS yet at boot, a broken
  // ssh_config) is retried like a failed ssh.
  auto alive = alive_;
  const tunnel::options defaults;
  std::mt19937 rng(std::random_device{}());
  auto delay = defaults.backoff_min;
  while (!stopping_) {
    std::string why;
    try {
      for (auto& ep : co_await servers(host))
        bypass_.push_back({ep.address(), ep.port(), settings_.name});
      located_[host] = true;
      co_return true;
    } catch (const std::exception& e) {
      why = e.what();
    }
    if (!*alive) co_return false;
    last_error_ = why;
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    const auto pause = std::chrono::milliseconds(static_cast<long>(delay.count() * jitter(rng)));
    spdlog::warn("[{}] cannot find its ssh server{}: {}; retrying in {:.1f} s", settings_.name,
                 settings_.hosts.size() > 1 ? " " + settings_.hosts[host] : "", why,
                 pause.count() / 1000.0);
    failed_once_[host] = true;
    if (!decided_ &&
        std::all_of(failed_once_.begin(), failed_once_.end(), [](bool b) { return b; })) {
      decided_ = true;
      notify(event::down);
    }
    retry_[host]->expires_after(pause);
    co_await retry_[host]->async_wait(as_tuple(use_awaitable));
    if (!*alive) co_return false;
    delay = std::min(delay * 2, defaults.backoff_max);
  }
  co_return false;
}

asio::awaitable<void> profile::run_host(std::size_t host) {
  auto alive = alive_;
  if (!located_[host] && !co_await find_host(host)) co_return;
  if (!*alive || stopping_) co_return;
  notify(event::bypass);
  std::vector<std::size_t> mine;
  for (std::size_t k = 0; k < members_.size(); ++k)
    if (members_[k].host == host) mine.push_back(k);
  asio::experimental::channel<void(error_code)> ended(ex_, mine.size());
  for (std::size_t k : mine) {
    auto& m = members_[k];
    tunnel::options o;
    o.profile = member_name(m);
    o.destination = settings_.hosts[host];
    o.ssh_args = ssh_args();
    o.control_path = members_.size() == 1 ? home_.control_path
                                          : home_.control_path + "." + std::to_string(host) + "." +
                                                std::to_string(m.index);
    o.as = home_.as;
    o.lifeline = home_.lifeline;
    o.max_setups_per_source = home_.max_setups_per_source;
    if (settings_.health.probe) {
      o.probe = tcp::endpoint(settings_.health.probe->address, *settings_.health.probe->port);
      o.probe_must_open = true;
    }
    o.probe_interval = settings_.health.interval;
    o.probe_timeout = settings_.health.timeout;
    m.tunnel = std::make_shared<tunnel::tunnel>(
        ex_, o, [this, k](tunnel::state s, const std::string& why) { on_tunnel(k, s, why); });
    const auto start = (host == 0 ? 0ms : std::chrono::milliseconds(backup_delay)) +
                       m.index * std::chrono::milliseconds(member_stagger);
    asio::co_spawn(
        ex_,
        [t = m.tunnel, start]() -> asio::awaitable<void> {
          if (start > 0ms) co_await sleep_for(start);
          co_await t->run();
        },
        [&ended](std::exception_ptr) { ended.try_send(error_code{}); });
  }
  for (std::size_t i = 0; i < mine.size(); ++i)
    co_await ended.async_receive(as_tuple(use_awaitable));
}

void profile::on_tunnel(std::size_t k, tunnel::state s, const std::string& why) {
  auto& m = members_[k];
  if (s == tunnel::state::up) {
    last_error_.clear();
    m.was_up = true;
    m.up_since = std::chrono::system_clock::now();
    decided_ = true;
    if (!serving_host_) serving_host_ = m.host;  // later moves count as failovers
    spdlog::info("[{}] tunnel up (ssh pid {})", member_name(m), m.tunnel->pid());
    if (dns_ && !nameserver_ && !reading_)
      asio::co_spawn(ex_, read_nameserver(m.tunnel), asio::detached);
    notify(event::up);
  } else if (s == tunnel::state::down) {
    last_error_ = why.empty() ? "ssh exited" : why;
    m.up_since.reset();
    if (m.was_up) ++stats_->restarts;
    m.was_up = false;
    spdlog::warn("[{}] tunnel down: {}", member_name(m), last_error_);
    failed_once_[m.host] = true;
    if (!decided_ &&
        std::all_of(failed_once_.begin(), failed_once_.end(), [](bool b) { return b; }))
      decided_ = true;
    notify(event::down);
  }
}

asio::awaitable<tcp::endpoint> profile::nameserver(std::shared_ptr<tunnel::tunnel> t) {
  if (nameserver_) co_return *nameserver_;
  auto alive = alive_;
  // No awk or anything else: cat is on every host, and the parsing happens here.
  auto text = co_await t->exec("cat /etc/resolv.conf", std::chrono::seconds(10));
  // A reload may have removed this profile while ssh answered: touch nothing of it then.
  if (!*alive) throw std::runtime_error("the profile was removed while reading its nameserver");
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
  for (auto& t : retry_) t->cancel();
  drained_.cancel();
  bool any = false;
  for (auto& m : members_)
    if (m.tunnel) {
      m.tunnel->stop();
      any = true;
    }
  if (!any) ended_ = true;
}

bool profile::host_up(std::size_t host) const {
  return std::any_of(members_.begin(), members_.end(),
                     [&](auto& m) { return m.host == host && m.tunnel && m.tunnel->up(); });
}

std::shared_ptr<tunnel::tunnel> profile::serving() const {
  for (auto& m : members_)
    if (m.tunnel && m.tunnel->up()) return m.tunnel;
  return nullptr;
}

std::optional<std::size_t> profile::serving_host() const {
  if (serving_host_ && host_up(*serving_host_)) return serving_host_;
  for (std::size_t h = 0; h < settings_.hosts.size(); ++h)
    if (host_up(h)) return h;
  return std::nullopt;
}

std::shared_ptr<tunnel::tunnel> profile::carrier() {
  const auto now = std::chrono::steady_clock::now();
  service_times hosts(settings_.hosts.size());
  for (auto& m : members_)
    if (m.tunnel && m.tunnel->up()) {
      const auto since = now - m.tunnel->health().healthy_since.value_or(now);
      hosts[m.host] = std::max(hosts[m.host].value_or(since), since);
    }
  const auto best = pick_host(hosts, serving_host_, failback_after);
  if (!best) {
    auto p = predecessor_.lock();
    return p ? p->serving() : nullptr;
  }
  if (serving_host_ != best) {
    if (serving_host_) {
      ++stats_->failovers;
      spdlog::warn("[{}] new flows go to {} (was {})", settings_.name, settings_.hosts[*best],
                   settings_.hosts[*serving_host_]);
    }
    serving_host_ = best;
  }
  const member* pick = nullptr;
  for (auto& m : members_)
    if (m.host == *best && m.tunnel && m.tunnel->up() &&
        (!pick || m.tunnel->flows() < pick->tunnel->flows()))
      pick = &m;
  return pick->tunnel;
}

void profile::replaces(const std::shared_ptr<profile>& old) {
  // The one that carries now: `old` itself, or what it was still waiting on.
  predecessor_ = old->up() ? old : old->predecessor_;
}

std::size_t profile::flows() const {
  std::size_t n = 0;
  for (auto& m : members_)
    if (m.tunnel) n += m.tunnel->flows();
  return n;
}

int profile::ssh_pid() const {
  for (auto& m : members_)
    if (m.tunnel && m.tunnel->pid()) return m.tunnel->pid();
  return 0;
}

std::optional<std::chrono::system_clock::time_point> profile::up_since() const {
  std::optional<std::chrono::system_clock::time_point> first;
  for (auto& m : members_)
    if (m.up_since && (!first || *m.up_since < *first)) first = m.up_since;
  return first;
}

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
