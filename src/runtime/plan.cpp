#include "runtime/plan.hpp"

#include <set>

namespace tprosshy::runtime {

routing::table make_table(const config::config& cfg) {
  routing::table t;
  for (auto& p : cfg.exclude) t.add_global_exclude(p);
  for (routing::profile_id id = 0; id < cfg.profiles.size(); ++id) {
    auto& prof = cfg.profiles[id];
    if (!prof.enabled) continue;
    for (auto& s : prof.subnets) t.add_subnet(s, id);
    for (auto& e : prof.exclude) t.add_exclude(e, id);
  }
  return t;
}

bool wants_dns(const config::config& cfg) {
  for (auto& p : cfg.profiles)
    if (p.enabled && !p.dns.domains.empty()) return true;
  return false;
}

nft::ruleset make_ruleset(const config::config& cfg, const routing::table& table,
                          const std::vector<nft::endpoint>& bypass, ports p,
                          const std::vector<net::address>& resolvers) {
  nft::ruleset r;
  r.mark = own_mark;
  r.output = true;
  r.lock = cfg.lockdown ? nft::lock_mode::on : nft::lock_mode::off;
  if (cfg.mode == config::run_mode::gateway) r.interfaces = cfg.gateway_interfaces;
  r.tcp_port = p.tcp;
  r.capture_dns = p.dns.has_value();
  r.dns_port = p.dns.value_or(0);
  r.capture_all_dns = cfg.capture == config::dns_capture::all;
  if (p.dns) r.resolvers = resolvers;
  r.bypass = bypass;
  r.exclude = table.global_excludes();
  const auto now = routing::clock::now();
  const auto learned = table.learned(now);
  std::vector<nft::profile_routes> by_id(cfg.profiles.size());
  for (bool v6 : {false, true})
    for (auto& rg : table.ranges(v6))
      (v6 ? by_id[rg.profile].v6 : by_id[rg.profile].v4).push_back({rg.first, rg.last});
  for (std::size_t id = 0; id < cfg.profiles.size(); ++id) {
    auto& prof = cfg.profiles[id];
    if (!prof.enabled) continue;
    by_id[id].name = prof.name;
    by_id[id].refuse_other = prof.refuse_other;
    by_id[id].learned = p.dns && prof.dns.learn_routes && !prof.dns.domains.empty();
    if (by_id[id].learned)
      for (const auto& l : learned)
        if (l.profile == id)
          by_id[id].known.push_back(
              {l.address, std::chrono::ceil<std::chrono::seconds>(l.expiry - now)});
    r.profiles.push_back(std::move(by_id[id]));
  }
  return r;
}

bool same_connection(const config::profile& a, const config::profile& b) {
  return a.hosts == b.hosts && a.ssh_args == b.ssh_args && a.pool == b.pool &&
         a.health == b.health && a.host_keys == b.host_keys;
}

reload_plan plan_reload(const config::config& now, const config::config& next,
                        const std::map<std::string, config::profile>& running) {
  reload_plan plan;
  auto text = [](const std::optional<config::endpoint>& e) { return e ? e->to_string() : ""; };
  auto addr = [](const std::optional<net::address>& a) { return a ? a->to_string() : ""; };
  auto fixed = [&](bool changed, const char* key) {
    if (changed) plan.fixed.emplace_back(key);
  };
  fixed(next.mode != now.mode, "mode");
  fixed(next.gateway_interfaces != now.gateway_interfaces, "gateway.interfaces");
  fixed(addr(next.listen_address) != addr(now.listen_address), "listen.address");
  fixed(next.tcp_port != now.tcp_port, "listen.tcp_port");
  fixed(next.dns_port != now.dns_port, "listen.dns_port");
  fixed(next.cache_size != now.cache_size, "dns.cache_size");
  fixed(next.control_socket != now.control_socket, "control.socket");
  fixed(next.helper_socket != now.helper_socket, "helper");
  fixed(next.ssh_user != now.ssh_user, "ssh_user");
  fixed(text(next.metrics_listen) != text(now.metrics_listen), "metrics.listen");
  if (!plan.fixed.empty()) return plan;

  std::set<std::string> enabled;
  for (const auto& pc : next.profiles) {
    if (!pc.enabled) {
      plan.profiles.push_back({reload_plan::step::disabled, pc.name, false});
      continue;
    }
    enabled.insert(pc.name);
    const auto it = running.find(pc.name);
    if (it != running.end() && same_connection(it->second, pc))
      plan.profiles.push_back({reload_plan::step::keep, pc.name, false});
    else
      plan.profiles.push_back({reload_plan::step::start, pc.name, it != running.end()});
  }
  for (const auto& [name, settings] : running)
    if (!enabled.contains(name)) plan.removed.push_back(name);
  return plan;
}

}  // namespace tprosshy::runtime
