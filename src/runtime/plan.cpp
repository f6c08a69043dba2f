#include "runtime/plan.hpp"

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

}  // namespace tprosshy::runtime
