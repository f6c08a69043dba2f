#include "runtime/runtime.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <set>

#include "dns/router.hpp"
#include "net/exit_codes.hpp"
#include "net/interfaces.hpp"
#include "proxy/server.hpp"
#include "routing/table.hpp"
#include "runtime/dns.hpp"
#include "runtime/plan.hpp"
#include "tunnel/control_dir.hpp"
#include "tunnel/gate.hpp"

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

// `a` routed through the profile `id` of `snap` until `expiry`; past `limit` (its
// dns.learn_limit) its oldest goes, counted on the profile: that one, if any.
std::optional<net::address> learn_into(snapshot& snap, routing::profile_id id,
                                       const net::address& a, routing::clock::time_point expiry,
                                       std::size_t limit) {
  auto evicted = snap.table.learn(a, id, expiry, limit);
  if (evicted) snap.by_id[id]->evicted(limit);
  return evicted;
}

}  // namespace

std::optional<tunnel::account> ssh_account(const config::config& c) {
  if (c.ssh_user.empty()) return std::nullopt;
  auto a = tunnel::account_by_name(c.ssh_user);
  if (!a)
    throw std::runtime_error(c.ssh_user_at.to_string() + ": ssh_user: no account '" + c.ssh_user +
                             "' in the password database");
  if (a->uid == ::geteuid()) return std::nullopt;  // ssh runs as we do anyway
  return a;
}

struct runtime::impl {
  impl(asio::any_io_executor e, config::config c, kernel& n)
      : ex(std::move(e)),
        cfg(std::move(c)),
        nl(n),
        ssh_as(ssh_account(cfg)),
        dir(ssh_as),
        changed(ex, 1),
        expiry(ex) {}

  asio::any_io_executor ex;
  config::config cfg;
  kernel& nl;
  std::optional<tunnel::account> ssh_as;  // ssh_user's; none: ssh runs as we do
  tunnel::control_dir dir;
  std::map<std::string, std::shared_ptr<profile>> profiles;  // by name: the one owner
  std::vector<std::shared_ptr<profile>> draining;            // replaced or removed by a reload
  std::shared_ptr<snapshot> current;
  tunnel::gate reloading{ex, 1};
  std::uint64_t generation = 0;  // names the control sockets of profiles a reload starts
  std::uint64_t reloads_ok = 0, reloads_failed = 0;
  std::chrono::system_clock::time_point started = std::chrono::system_clock::now();
  std::chrono::system_clock::time_point last_reload = started;
  std::optional<proxy::server> server;
  std::unique_ptr<dns_front> dns;
  bool installed = false, stopping = false;
  std::map<std::string, std::uint64_t> refused_earlier;  // by tables replaced since
  std::size_t running = 0;                               // profiles whose run() has not ended
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
    if (e == profile::event::up)
      for (auto& p : draining) p->poke();
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
    auto t = p->carrier();
    if (!t) return std::nullopt;
    return proxy::route{p->name(), std::move(t)};
  }

  void count(const proxy::route& r, const tunnel::flow_result& res) {
    // Counters belong to the name (a replacement shares its predecessor's).
    if (auto it = profiles.find(r.profile); it != profiles.end())
      it->second->count(res);
    else if (auto d = std::find_if(draining.begin(), draining.end(),
                                   [&](auto& p) { return p->name() == r.profile; });
             d != draining.end())
      (*d)->count(res);
    for (auto& p : draining) p->poke();
    if (stopping) changed.try_send(error_code{});
  }

  // An address a profile's nameserver answered routes through that profile for its TTL (at
  // most dns.learn_ttl_max), in the dispatcher and in the kernel's timeout set alike; past
  // dns.learn_limit the profile's oldest goes from both in the same step.
  void learn(profile& p, const net::address& a, std::uint32_t ttl) {
    const auto& rules = p.settings().dns;
    if (!rules.learn_routes || ttl == 0) return;
    ttl = static_cast<std::uint32_t>(std::min<std::int64_t>(ttl, rules.learn_ttl_max.count()));
    const auto& by_id = current->by_id;
    const auto it =
        std::find_if(by_id.begin(), by_id.end(), [&](auto& q) { return q.get() == &p; });
    if (it == by_id.end()) return;
    const auto evicted =
        learn_into(*current, static_cast<routing::profile_id>(it - by_id.begin()), a,
                   routing::clock::now() + std::chrono::seconds(ttl), rules.learn_limit);
    if (!installed) return;
    try {
      nl.learn(p.name(), a, std::chrono::seconds(ttl), evicted);
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

  // Every ssh server still connected to: the enabled profiles' and the draining ones'.
  std::vector<nft::endpoint> bypass(const std::vector<std::shared_ptr<profile>>& enabled) const {
    std::vector<nft::endpoint> out;
    for (const auto* list : {&enabled, &draining})
      for (auto& p : *list) out.insert(out.end(), p->bypass().begin(), p->bypass().end());
    return out;
  }

  nft::ruleset ruleset(const config::config& c, const snapshot& snap,
                       const std::vector<std::shared_ptr<profile>>& enabled) const {
    ports p{server->port(), dns ? std::optional(dns->port()) : std::nullopt};
    return make_ruleset(c, snap.table, bypass(enabled), p,
                        dns ? dns->system_resolvers() : std::vector<net::address>{});
  }

  void install() { put(ruleset(cfg, *current, in_order())); }

  dns_front::socket_fn own_socket() {
    if (!nl.confined()) return {};
    return [this](int family, int type) { return nl.own_socket(family, type); };
  }

  // A new table counts from 0: what the old one refused is kept, by name, first.
  void put(const nft::ruleset& r) {
    const auto before = installed ? refused_now() : std::map<std::string, std::uint64_t>{};
    nl.install(r);
    installed = true;
    for (const auto& [name, n] : before) refused_earlier[name] += n;
  }

  std::map<std::string, std::uint64_t> refused_now() const {
    try {
      return nl.refused();
    } catch (const std::exception& e) {
      spdlog::debug("cannot read the refusal counters: {}", e.what());
      return {};
    }
  }

  void start(const std::shared_ptr<profile>& p) {
    ++running;
    asio::co_spawn(ex, p->run(), [this, p](std::exception_ptr e) {
      --running;
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          spdlog::error("[{}] stopped by an error: {}", p->name(), x.what());
        }
      }
      std::erase(draining, p);
      changed.try_send(error_code{});
    });
  }

  // Counters belong to a profile's name for the process's life: a profile replaced, or
  // removed and added back, by reloads carries on from where its name was.
  std::map<std::string, std::shared_ptr<counters>> totals;

  std::shared_ptr<profile> make_profile(const config::profile& pc, const std::string& socket_name) {
    auto& t = totals[pc.name];
    if (!t) t = std::make_shared<counters>();
    return std::make_shared<profile>(
        ex, pc,
        ssh_home{
            dir.socket(socket_name), dir.file(socket_name + ".known_hosts"), ssh_as, nl.lifeline(),
            // One LAN host may hold at most a quarter of a tunnel's flows being opened.
            cfg.mode == config::run_mode::gateway ? tunnel::options{}.max_flows / 4 : SIZE_MAX},
        [this](profile& p, profile::event e) { on_event(p, e); }, t);
  }

  asio::awaitable<reload_result> reload(const std::filesystem::path& file);

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

runtime::runtime(asio::any_io_executor ex, config::config cfg, kernel& nl)
    : impl_(std::make_unique<impl>(std::move(ex), std::move(cfg), nl)) {
  auto& i = *impl_;
  auto snap = std::make_shared<snapshot>();
  snap->table = make_table(i.cfg);
  for (auto& pc : i.cfg.profiles) {
    if (!pc.enabled) {
      snap->by_id.push_back(nullptr);
      continue;
    }
    auto p = i.make_profile(pc, pc.name);
    i.profiles.emplace(pc.name, p);
    snap->by_id.push_back(std::move(p));
  }
  i.current = std::move(snap);
}

runtime::~runtime() = default;

void runtime::listen() {
  auto& i = *impl_;
  // Gateway mode listens on the LAN interfaces' own addresses (where the kernel redirects
  // their traffic to), or on listen.address, and on loopback, never on a wildcard address.
  // Loopback always: the output hook redirects this machine's own flows to 127.0.0.1 and ::1.
  std::vector<tcp::endpoint> eps;
  auto add = [&](const net::address& a) {
    tcp::endpoint ep(a, i.cfg.tcp_port);
    if (std::find(eps.begin(), eps.end(), ep) == eps.end() && net::can_bind(a)) eps.push_back(ep);
  };
  if (i.cfg.listen_address) add(*i.cfg.listen_address);
  add(asio::ip::make_address("127.0.0.1"));
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
        [&i](profile& p, const net::address& a, std::uint32_t ttl) { i.learn(p, a, ttl); },
        i.own_socket());
  } catch (const boost::system::system_error& e) {
    throw listen_error("cannot listen on DNS port " + std::to_string(i.cfg.dns_port) + ": " +
                       e.code().message());
  }
  asio::co_spawn(i.ex, i.expire_learned(), asio::detached);
}

void runtime::start() {
  for (auto& p : impl_->in_order()) impl_->start(p);
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

std::size_t runtime::adopt(
    const std::map<std::string, std::vector<nft::learned_address>>& learned) {
  auto& i = *impl_;
  std::size_t n = 0;
  const auto now = routing::clock::now();
  for (routing::profile_id id = 0; id < i.current->by_id.size(); ++id) {
    const auto& p = i.current->by_id[id];
    const auto it = p ? learned.find(p->name()) : learned.end();
    if (it == learned.end() || !p->settings().dns.learn_routes) continue;
    const auto& rules = p->settings().dns;
    for (const auto& a : it->second) {
      const auto ttl = std::min<std::chrono::seconds>(a.ttl, rules.learn_ttl_max);
      learn_into(*i.current, id, a.address, now + ttl, rules.learn_limit);
      ++n;
    }
  }
  return n;
}

asio::awaitable<void> runtime::stop() {
  auto& i = *impl_;
  i.stopping = true;
  // A reload under way finishes first (it never waits long), so it cannot put a ruleset
  // back after the one removed here.
  auto slot = co_await i.reloading.enter();
  i.expiry.cancel();
  if (i.dns) i.dns->stop();
  if (i.server) i.server->stop();
  for (auto& [name, p] : i.profiles) p->stop();
  for (auto& p : std::vector(i.draining)) p->stop();
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

asio::awaitable<runtime::reload_result> runtime::reload(std::filesystem::path file) {
  auto& i = *impl_;
  auto slot = co_await i.reloading.enter();
  if (i.stopping) co_return reload_result{exit_code::tempfail, "tprosshy is stopping"};
  auto r = co_await i.reload(file);
  if (r.code == 0) {
    ++i.reloads_ok;
    i.last_reload = std::chrono::system_clock::now();
    spdlog::info("reload of {}: {}", file.string(), r.message);
  } else {
    ++i.reloads_failed;
    spdlog::error("reload of {} refused: {}", file.string(), r.message);
  }
  co_return r;
}

asio::awaitable<runtime::reload_result> runtime::impl::reload(const std::filesystem::path& file) {
  config::config next;
  try {
    next = config::load(file);
  } catch (const config::error& e) {
    co_return reload_result{exit_code::config, e.what()};
  } catch (const config::unreadable& e) {
    co_return reload_result{exit_code::noinput, file.string() + ": " + e.code().message()};
  }

  std::map<std::string, config::profile> running;
  for (auto& [name, p] : profiles) running.emplace(name, p->settings());
  const auto plan = plan_reload(cfg, next, running);
  if (!plan.fixed.empty()) {
    std::string keys;
    for (auto& k : plan.fixed) keys += (keys.empty() ? "" : ", ") + k;
    co_return reload_result{exit_code::config,
                            file.string() + ": " + keys +
                                " cannot change while tprosshy runs (restart it for that); "
                                "nothing was changed"};
  }

  // The plan carried out: a kept profile keeps its ssh, a started one gets new ones.
  std::vector<std::shared_ptr<profile>> by_id, added, retired;
  std::map<profile*, std::weak_ptr<profile>> successor;
  std::vector<std::pair<profile*, config::profile>> updates;
  for (std::size_t k = 0; k < plan.profiles.size(); ++k) {
    const auto& step = plan.profiles[k];
    const auto& pc = next.profiles[k];
    if (step.what == reload_plan::step::disabled) {
      by_id.push_back(nullptr);
      continue;
    }
    if (step.what == reload_plan::step::keep) {
      auto& p = profiles.at(step.name);
      updates.emplace_back(p.get(), pc);
      by_id.push_back(p);
      continue;
    }
    auto p = make_profile(pc, pc.name + "." + std::to_string(++generation));
    added.push_back(p);
    by_id.push_back(p);
    if (step.replaces) {
      auto& old = profiles.at(step.name);
      p->replaces(old);
      successor[old.get()] = p;
      retired.push_back(old);
    }
  }
  for (auto& name : plan.removed) retired.push_back(profiles.at(name));
  std::vector<std::shared_ptr<profile>> enabled;
  for (auto& p : by_id)
    if (p) enabled.push_back(p);

  // New ssh servers go into this very ruleset, so a profile that routes everything never
  // sends its own ssh into a tunnel; one not found yet is retried when it starts.
  for (auto& p : added) co_await p->locate(std::chrono::seconds(5));
  if (stopping) co_return reload_result{exit_code::tempfail, "tprosshy is stopping"};

  auto snap = std::make_shared<snapshot>();
  snap->table = make_table(next);
  snap->by_id = by_id;
  std::map<std::string, routing::profile_id> id_of;
  for (routing::profile_id id = 0; id < by_id.size(); ++id)
    if (by_id[id] && next.profiles[id].dns.learn_routes) id_of[by_id[id]->name()] = id;
  // Oldest first, so that a lower learn_limit keeps the latest.
  for (auto& l : current->table.learned())
    if (auto& old = current->by_id[l.profile])
      if (auto it = id_of.find(old->name()); it != id_of.end())
        learn_into(*snap, it->second, l.address, l.expiry,
                   next.profiles[it->second].dns.learn_limit);

  // DNS: the first profile with domains needs the listener.
  std::unique_ptr<dns_front> fresh_dns;
  if (!dns && wants_dns(next)) {
    std::vector<asio::ip::address> addrs;
    for (auto& ep : server->local_endpoints()) addrs.push_back(ep.address());
    try {
      fresh_dns = dns_front::make(
          ex, next, addrs, enabled,
          [this](profile& p, const net::address& a, std::uint32_t ttl) { learn(p, a, ttl); },
          own_socket());
    } catch (const boost::system::system_error& e) {
      co_return reload_result{exit_code::oserr, "cannot listen on DNS port " +
                                                    std::to_string(next.dns_port) + ": " +
                                                    e.code().message() + "; nothing was changed"};
    }
  }

  // The kernel first: if it refuses, nothing else has changed.
  // Only a front made by this reload replaces the running one (there was none before it).
  const bool dns_created = fresh_dns != nullptr;
  if (dns_created) std::swap(dns, fresh_dns);
  auto retiring = draining;
  draining.insert(draining.end(), retired.begin(), retired.end());
  try {
    put(ruleset(next, *snap, enabled));
  } catch (const std::exception& e) {
    if (dns_created) std::swap(dns, fresh_dns);
    draining = retiring;
    co_return reload_result{exit_code::oserr, std::string("cannot install the new ruleset: ") +
                                                  e.what() + "; nothing was changed"};
  }

  // Cached answers stay, but for names that now go elsewhere or to a new nameserver.
  std::map<const profile*, std::string> nameserver_was;
  for (auto& [p, pc] : updates) {
    nameserver_was[p] = p->settings().dns.nameserver;
    p->update(pc);
  }
  if (dns && !dns_created) {
    std::set<const profile*> renewed;
    for (auto& p : added) renewed.insert(p.get());
    dns::router next_router;
    for (std::size_t k = 0; k < enabled.size(); ++k)
      if (enabled[k]->dns())
        for (auto& d : enabled[k]->settings().dns.domains) next_router.add(d, k);
    dns->update(next, enabled, [&](std::string_view name) {
      const profile* before = dns->owner(name);
      const auto k = next_router.match(name);
      const profile* after = k ? enabled[*k].get() : nullptr;
      if ((before ? before->name() : "") != (after ? after->name() : "")) return true;
      if (!after) return false;
      if (renewed.contains(after)) return true;
      auto it = nameserver_was.find(after);
      return it != nameserver_was.end() && it->second != after->settings().dns.nameserver;
    });
  }

  cfg = std::move(next);
  current = std::move(snap);
  profiles.clear();
  for (auto& p : enabled) profiles.emplace(p->name(), p);
  for (auto& p : added) start(p);
  for (auto& p : retired)
    asio::co_spawn(ex, p->drain(cfg.drain_timeout, successor[p.get()]), asio::detached);
  co_return reload_result{exit_code::ok, std::to_string(enabled.size() - added.size()) +
                                             " profiles kept, " + std::to_string(added.size()) +
                                             " started, " + std::to_string(retired.size()) +
                                             " draining"};
}

control::status runtime::status() const {
  const auto& i = *impl_;
  auto unix = [](std::chrono::system_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
  };
  control::status st;
  st.version = TPROSSHY_VERSION;
  st.config_file = i.cfg.file.string();
  st.started = unix(i.started);
  st.reloads_ok = i.reloads_ok;
  st.reloads_failed = i.reloads_failed;
  st.last_reload_success = unix(i.last_reload);
  if (i.dns) {
    st.dns_cache_hits = i.dns->cache_hits();
    st.dns_local_queries = i.dns->local_answers();
  }
  // What make_ruleset() captures, from the same inputs the installed ruleset was made of.
  st.lockdown = i.installed && i.cfg.lockdown;
  if (i.installed && i.dns) {
    const bool all = i.cfg.capture == config::dns_capture::all;
    const auto& resolvers = i.dns->system_resolvers();
    st.dns_capture.installed = all || !resolvers.empty();
    st.dns_capture.port = i.dns->port();
    st.dns_capture.all = all;
    for (auto& a : resolvers) st.dns_capture.resolvers.push_back(a.to_string());
  }
  std::map<routing::profile_id, std::uint64_t> learned;
  for (auto& l : i.current->table.learned()) ++learned[l.profile];
  auto tunnels = [&](const profile& p, bool draining) {
    std::vector<control::tunnel_status> out;
    for (auto& m : p.members()) {
      control::tunnel_status ts;
      ts.host = p.settings().hosts[m.host];
      ts.member = static_cast<unsigned>(m.index + 1);
      if (!m.tunnel) {
        ts.state = "starting";
      } else {
        const auto& h = m.tunnel->health();
        ts.state = draining                                     ? "draining"
                   : m.tunnel->up()                             ? "up"
                   : m.tunnel->current() == tunnel::state::up   ? "unhealthy"
                   : m.tunnel->current() == tunnel::state::down ? "down"
                                                                : "starting";
        ts.ssh_pid = m.tunnel->pid();
        ts.control_path = m.tunnel->config().control_path;
        ts.flows_active = m.tunnel->flows();
        if (h.last_latency) ts.probe_ms = h.last_latency->count() / 1000.0;
        ts.probe_failure = h.last_failure;
        ts.probe_bounds.assign(h.probes.bounds.begin(), h.probes.bounds.end());
        ts.probe_buckets.assign(h.probes.buckets.begin(), h.probes.buckets.end());
        ts.probe_count = h.probes.count;
        ts.probe_sum = h.probes.sum;
      }
      out.push_back(std::move(ts));
    }
    return out;
  };
  auto add = [&](const profile& p, std::optional<routing::profile_id> id) {
    control::profile_status ps;
    ps.name = p.name();
    ps.state = p.draining() ? "draining" : p.up() ? "up" : p.decided() ? "down" : "starting";
    ps.host = p.settings().host;
    ps.ssh_pid = p.ssh_pid();
    ps.control_path = p.control_path();
    if (auto t = p.up_since()) ps.up_since = unix(*t);
    const auto& c = const_cast<profile&>(p).stats();
    ps.restarts = c.restarts;
    ps.last_error = p.last_error();
    ps.flows_active = p.flows();
    ps.flows_ok = c.flows_ok;
    ps.flows_reset = c.flows_reset;
    ps.flows_refused = c.flows_refused;
    ps.bytes_up = c.bytes_up;
    ps.bytes_down = c.bytes_down;
    ps.dns_queries = c.dns_answers;
    ps.learned_routes = id ? learned[*id] : 0;
    if (auto h = p.serving_host()) ps.serving_host = p.settings().hosts[*h];
    ps.failovers = c.failovers;
    ps.learned_evicted = c.learned_evicted;
    ps.tunnels = tunnels(p, p.draining());
    st.profiles.push_back(std::move(ps));
  };
  for (routing::profile_id id = 0; id < i.current->by_id.size(); ++id)
    if (auto& p = i.current->by_id[id]) add(*p, id);
  const auto refused = i.installed ? i.refused_now() : std::map<std::string, std::uint64_t>{};
  for (auto& ps : st.profiles) {
    const auto now = refused.find(ps.name);
    const auto earlier = i.refused_earlier.find(ps.name);
    ps.refused_packets = (now == refused.end() ? 0 : now->second) +
                         (earlier == i.refused_earlier.end() ? 0 : earlier->second);
  }
  // A draining profile shows under the live one of its name (names are unique), or alone.
  for (auto& p : i.draining) {
    auto it = std::find_if(st.profiles.begin(), st.profiles.end(),
                           [&](auto& ps) { return ps.name == p->name(); });
    if (it == st.profiles.end()) {
      add(*p, std::nullopt);
      continue;
    }
    it->flows_active += p->flows();
    for (auto& t : tunnels(*p, true)) it->tunnels.push_back(std::move(t));
  }
  return st;
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
