#include "nft/plan.hpp"

#include <linux/rtnetlink.h>
#include <netinet/in.h>

#include <algorithm>
#include <optional>

namespace tprosshy::nft::plan {

namespace {

constexpr const char* common_chain = "route";

family fam_of(const net::address& a) { return a.is_v4() ? family::v4 : family::v6; }

std::vector<addr_range> to_ranges(const std::vector<net::prefix>& ps, family f) {
  std::vector<addr_range> out;
  for (const auto& p : ps)
    if (fam_of(p.network) == f) out.push_back({p.first(), p.last()});
  return out;
}

std::vector<addr_range> of_family(const std::vector<addr_range>& rs, family f) {
  std::vector<addr_range> out;
  for (const auto& r : rs)
    if (fam_of(r.first) == f) out.push_back(r);
  return out;
}

constexpr const char* refuse_chain = "refuse";

// A confined table redirects and refuses only its uid's sockets: that match goes first on
// every such rule.
std::vector<match> confined(const ruleset& r, std::vector<match> ms) {
  if (r.skuid) ms.insert(ms.begin(), skuid{*r.skuid});
  return ms;
}

bool has_set(const table& t, const std::string& name) {
  return std::any_of(t.sets.begin(), t.sets.end(), [&](auto& s) { return s.name == name; });
}

// What keeps the machine on its network, never refused even with 0.0.0.0/0 routed: this
// machine's own, broadcast, multicast and link-local addresses, ND and router messages, DHCP,
// DNS when tprosshy does not capture it, the ssh servers (every protocol) and excludes.
void keep_on_network(chain& c, const ruleset& r, const table& t) {
  auto keep = [&](std::vector<match> ms, std::string why) {
    c.rules.push_back({std::move(ms), ret{}, std::move(why)});
  };
  keep({fib_type{RTN_LOCAL}}, "local destinations");
  keep({fib_type{RTN_BROADCAST}}, "broadcast");
  keep({fib_type{RTN_MULTICAST}}, "multicast");
  for (const char* n : {"169.254.0.0/16", "224.0.0.0/4", "fe80::/10", "ff00::/8"})
    keep({daddr_net{*net::parse_prefix(n)}}, "link-local and multicast");
  keep({daddr{boost::asio::ip::make_address("255.255.255.255")}}, "broadcast");
  for (uint8_t type = 133; type <= 137; ++type) keep({icmpv6_type{type}}, "nd and router messages");
  for (uint16_t port : {67, 68, 546, 547}) keep({l4proto{IPPROTO_UDP}, dport{port}}, "dhcp");
  if (!r.capture_dns) keep({l4proto{IPPROTO_UDP}, dport{53}}, "dns: not captured");
  std::vector<net::address> seen;
  for (const auto& e : r.bypass) {
    if (std::find(seen.begin(), seen.end(), e.address) != seen.end()) continue;
    seen.push_back(e.address);
    keep({daddr{e.address}}, e.profile + " ssh server");
  }
  for (auto f : {family::v4, family::v6})
    if (auto name = f == family::v4 ? "exclude4" : "exclude6"; has_set(t, name))
      keep({daddr_in{f, name}}, "exclude");
}

// Refusals of what is not TCP to a profile's set `name`: UDP as a closed port answers (so
// QUIC falls back to TCP now), the rest administratively prohibited.
void refuse_other(chain& c, const ruleset& r, const std::string& profile, family f,
                  const std::string& name) {
  c.rules.push_back({confined(r, {daddr_in{f, name}, l4proto{IPPROTO_UDP}}),
                     reject{false, false, f}, profile + ": udp refused", refused_counter(profile)});
  c.rules.push_back({confined(r, {daddr_in{f, name}}), reject{false, true},
                     profile + ": not tcp, refused", refused_counter(profile)});
}

// A counter for each profile that a rule of `t` counts into.
void add_counters(table& t) {
  for (const auto& c : t.chains)
    for (const auto& r : c.rules)
      if (!r.counter.empty() &&
          std::find(t.counters.begin(), t.counters.end(), r.counter) == t.counters.end())
        t.counters.push_back(r.counter);
}

// What is not TCP, to a routed or learned destination of a profile that refuses it, is
// refused at once rather than sent in the clear; DNS captured is redirected and local by
// now. Uses the sets `t` already has.
std::optional<chain> refusals(const ruleset& r, const table& t) {
  const bool any = std::any_of(r.profiles.begin(), r.profiles.end(), [](auto& p) {
    return p.refuse_other && (p.learned || !p.v4.empty() || !p.v6.empty());
  });
  if (!any) return std::nullopt;
  chain c{refuse_chain, hook::none, 0, {}, true, {}};
  c.note = "Reached from the filter hooks below: what tprosshy cannot carry is refused.";
  if (r.mark != 0) c.rules.push_back({{mark{r.mark}}, ret{}, "tprosshy's own sockets"});
  c.rules.push_back({{l4proto{IPPROTO_TCP}}, ret{}, "tcp: redirected by the nat hooks"});
  keep_on_network(c, r, t);
  for (const auto& p : r.profiles) {
    if (!p.refuse_other) continue;
    for (auto f : {family::v4, family::v6})
      for (const auto& name : {routed_set(p.name, f), learned_set(p.name, f)})
        if (has_set(t, name)) refuse_other(c, r, p.name, f, name);
  }
  return c;
}

}  // namespace

std::string routed_set(const std::string& profile, family f) {
  return (f == family::v4 ? "route4_" : "route6_") + profile;
}

std::string learned_set(const std::string& profile, family f) {
  return (f == family::v4 ? "learn4_" : "learn6_") + profile;
}

std::string refused_counter(const std::string& profile) { return "refused_" + profile; }

std::optional<std::string> refused_profile(const std::string& counter) {
  if (!counter.starts_with("refused_")) return std::nullopt;
  return counter.substr(8);
}

std::vector<addr_range> normalize(std::vector<addr_range> ranges) {
  auto key = [](const addr_range& r) { return net::to_u128(r.first); };
  std::sort(ranges.begin(), ranges.end(),
            [&](const addr_range& a, const addr_range& b) { return key(a) < key(b); });
  std::vector<addr_range> out;
  for (const auto& r : ranges) {
    if (net::to_u128(r.last) < net::to_u128(r.first)) continue;  // empty: nothing to route
    // Merge when r starts at or before the address just after the previous range's end.
    if (!out.empty() && net::to_u128(r.first) - 1 <= net::to_u128(out.back().last) &&
        net::to_u128(r.first) != 0) {
      if (net::to_u128(r.last) > net::to_u128(out.back().last)) out.back().last = r.last;
      continue;
    }
    out.push_back(r);
  }
  return out;
}

// nft keeps comments to 128 bytes; a longer one would not survive a round trip.
void clip_comments(table& t) {
  constexpr size_t max = 128;
  for (auto& s : t.sets) s.comment.resize(std::min(s.comment.size(), max));
  for (auto& c : t.chains)
    for (auto& r : c.rules) r.comment.resize(std::min(r.comment.size(), max));
}

table make(const ruleset& r) {
  table t{r.table.empty() ? "tprosshy" : r.table, {}, {}};
  chain route{common_chain, hook::none, 0, {}, false, {}};
  route.note = "Reached from the nat hooks below; the first matching rule decides.";
  const family both[] = {family::v4, family::v6};
  auto redirecting = [&](std::vector<match> ms) { return confined(r, std::move(ms)); };
  auto add_set = [&](std::string name, family f, bool interval, std::string comment,
                     std::vector<addr_range> elems) {
    t.sets.push_back({std::move(name), f, interval, false, std::move(comment),
                      interval ? normalize(std::move(elems)) : std::move(elems)});
  };

  // 1. tprosshy's own sockets (DNS upstream, ...) must never come back to it.
  if (r.mark != 0) route.rules.push_back({{mark{r.mark}}, ret{}, "tprosshy's own sockets"});

  // 2. DNS, before the local-destination return: resolvers are often local (127.0.0.53).
  if (r.capture_dns) {
    if (r.capture_all_dns) {
      for (uint8_t proto : {uint8_t(IPPROTO_UDP), uint8_t(IPPROTO_TCP)})
        route.rules.push_back(
            {redirecting({l4proto{proto}, dport{53}}), redirect{r.dns_port}, "dns"});
    } else {
      for (auto f : both) {
        std::vector<net::u128> keys;
        for (const auto& a : r.resolvers)
          if (fam_of(a) == f) keys.push_back(net::to_u128(a));
        std::sort(keys.begin(), keys.end());
        keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
        std::vector<addr_range> addrs;
        for (auto k : keys) addrs.push_back({net::from_u128(k, f == family::v4), {}});
        for (auto& a : addrs) a.last = a.first;
        if (addrs.empty()) continue;
        std::string name = f == family::v4 ? "resolvers4" : "resolvers6";
        add_set(name, f, false, "captured DNS resolvers", std::move(addrs));
        for (uint8_t proto : {uint8_t(IPPROTO_UDP), uint8_t(IPPROTO_TCP)})
          route.rules.push_back({redirecting({daddr_in{f, name}, l4proto{proto}, dport{53}}),
                                 redirect{r.dns_port}, "dns"});
      }
    }
  }

  // 3. This machine's own addresses.
  route.rules.push_back({{fib_type{RTN_LOCAL}}, ret{}, "local destinations"});

  // 4. The ssh servers themselves, or the tunnels would loop into themselves.
  std::vector<endpoint> seen;
  for (const auto& e : r.bypass) {
    if (std::find(seen.begin(), seen.end(), e) != seen.end()) continue;
    seen.push_back(e);
    route.rules.push_back({{daddr{e.address}, l4proto{IPPROTO_TCP}, dport{e.port}},
                           ret{},
                           e.profile + " ssh server"});
  }

  // 5. Global excludes.
  for (auto f : both) {
    auto ranges = normalize(to_ranges(r.exclude, f));
    if (ranges.empty()) continue;
    std::string name = f == family::v4 ? "exclude4" : "exclude6";
    add_set(name, f, true, "never redirected", std::move(ranges));
    route.rules.push_back({{daddr_in{f, name}}, ret{}, "exclude"});
  }

  // 6. Each profile's routed (and learned) destinations go to the TCP listener.
  for (const auto& p : r.profiles) {
    for (auto f : both) {
      auto ranges = normalize(of_family(f == family::v4 ? p.v4 : p.v6, f));
      if (ranges.empty()) continue;
      std::string name = routed_set(p.name, f);
      add_set(name, f, true, p.name, std::move(ranges));
      route.rules.push_back(
          {redirecting({daddr_in{f, name}, l4proto{IPPROTO_TCP}}), redirect{r.tcp_port}, p.name});
    }
    if (!p.learned) continue;
    for (auto f : both) {
      std::string name = learned_set(p.name, f);
      std::vector<learned_address> timed;
      for (const auto& k : p.known)
        if (k.address.is_v4() == (f == family::v4) && k.ttl.count() > 0) timed.push_back(k);
      t.sets.push_back(
          {name, f, false, true, p.name + ": learned from DNS answers", {}, std::move(timed)});
      route.rules.push_back({redirecting({daddr_in{f, name}, l4proto{IPPROTO_TCP}}),
                             redirect{r.tcp_port}, p.name + " learned"});
    }
  }

  auto refuse = refusals(r, t);
  t.chains.push_back(std::move(route));
  if (r.output)
    t.chains.push_back(
        {"nat_output", hook::output, -100, {{{}, jump{common_chain}, {}}}, false, {}});
  if (!r.interfaces.empty()) {
    chain pre{"nat_prerouting", hook::prerouting, -100, {}, false, {}};
    // LAN hosts often ask the gateway itself (what DHCP hands out): DNS to any of this
    // machine's addresses gets the captured queries' split DNS. From these interfaces
    // only; `capture: all` already redirects it in the route chain.
    bool to_gateway = r.capture_dns && !r.capture_all_dns;
    for (const auto& i : r.interfaces) {
      if (to_gateway)
        for (uint8_t proto : {uint8_t(IPPROTO_UDP), uint8_t(IPPROTO_TCP)})
          pre.rules.push_back(
              {redirecting({iifname{i}, l4proto{proto}, dport{53}, fib_type{RTN_LOCAL}}),
               redirect{r.dns_port}, "dns to this gateway"});
      pre.rules.push_back({{iifname{i}}, jump{common_chain}, {}});
    }
    t.chains.push_back(std::move(pre));
  }
  if (refuse) {
    t.chains.push_back(std::move(*refuse));
    if (r.output)
      t.chains.push_back(
          {"filter_output", hook::output, 0, {{{}, jump{refuse_chain}, {}}}, true, {}});
    if (!r.interfaces.empty()) {
      chain fwd{"filter_forward", hook::forward, 0, {}, true, {}};
      for (const auto& i : r.interfaces)
        fwd.rules.push_back({{iifname{i}}, jump{refuse_chain}, {}});
      t.chains.push_back(std::move(fwd));
    }
  }
  // The DNS listener binds the LAN addresses too, which hosts on the WAN side may route
  // to: only queries the rules above redirected may reach it, the rest are refused as a
  // closed port refuses them. (The TCP listener resets what was not redirected itself.)
  if (r.capture_dns) {
    chain in{"filter_input", hook::input, 0, {}, true, {}};
    in.note = "Only what the nat rules redirected reaches the DNS port.";
    for (uint8_t proto : {uint8_t(IPPROTO_UDP), uint8_t(IPPROTO_TCP)}) {
      in.rules.push_back(
          {{l4proto{proto}, dport{r.dns_port}, ct_dnat{}}, accept{}, "dns: redirected"});
      in.rules.push_back({{l4proto{proto}, dport{r.dns_port}},
                          reject{proto == IPPROTO_TCP},
                          "dns: not redirected"});
    }
    t.chains.push_back(std::move(in));
  }
  add_counters(t);
  clip_comments(t);
  return t;
}

table make_lock(const ruleset& r) {
  // The main table's sets, so both tables hold the same destinations.
  table t{lock_table, make(r).sets, {}};
  chain c{"lock", hook::none, 0, {}, true, {}};
  c.note =
      "The kill switch: what the main table does not redirect to tprosshy is refused "
      "here, with or without a tprosshy running.";
  c.rules.push_back({{ct_dnat{}}, ret{}, "redirected by tprosshy's table"});
  if (r.mark != 0) c.rules.push_back({{mark{r.mark}}, ret{}, "tprosshy's own sockets"});
  // Before the local return: the resolver is often this machine's own (127.0.0.53).
  if (r.capture_dns) {
    for (auto f : {family::v4, family::v6}) {
      std::vector<match> to;
      if (!r.capture_all_dns) {
        const auto name = f == family::v4 ? "resolvers4" : "resolvers6";
        if (!has_set(t, name)) continue;
        to.push_back(daddr_in{f, name});
      } else if (f == family::v6) {
        continue;  // one pair of rules for both families
      }
      auto udp = to, tcp = to;
      udp.insert(udp.end(), {l4proto{IPPROTO_UDP}, dport{53}});
      tcp.insert(tcp.end(), {l4proto{IPPROTO_TCP}, dport{53}});
      c.rules.push_back({std::move(udp),
                         reject{false, false, to.empty() ? std::nullopt : std::optional(f)},
                         "dns: refused"});
      c.rules.push_back({std::move(tcp), reject{true}, "dns: refused"});
    }
  }
  keep_on_network(c, r, t);
  for (const auto& p : r.profiles)
    for (auto f : {family::v4, family::v6})
      for (const auto& name : {routed_set(p.name, f), learned_set(p.name, f)}) {
        if (!has_set(t, name)) continue;
        c.rules.push_back({{daddr_in{f, name}, l4proto{IPPROTO_TCP}},
                           reject{true},
                           p.name + ": tcp refused",
                           refused_counter(p.name)});
        if (p.refuse_other) refuse_other(c, r, p.name, f, name);
      }
  t.chains.push_back(std::move(c));
  // After the main table's filter chains (priority 0), so that they count what they refuse.
  constexpr int after_main = 10;
  if (r.output)
    t.chains.push_back(
        {"lock_output", hook::output, after_main, {{{}, jump{"lock"}, {}}}, true, {}});
  if (!r.interfaces.empty()) {
    chain fwd{"lock_forward", hook::forward, after_main, {}, true, {}};
    for (const auto& i : r.interfaces) fwd.rules.push_back({{iifname{i}}, jump{"lock"}, {}});
    t.chains.push_back(std::move(fwd));
    // LAN hosts asking the gateway itself, which the main table answers with split DNS.
    if (r.capture_dns && !r.capture_all_dns) {
      chain in{"lock_input", hook::input, after_main, {}, true, {}};
      in.rules.push_back({{ct_dnat{}}, ret{}, "redirected by tprosshy's table"});
      for (const auto& i : r.interfaces) {
        in.rules.push_back(
            {{iifname{i}, l4proto{IPPROTO_UDP}, dport{53}}, reject{}, "dns to this gateway"});
        in.rules.push_back(
            {{iifname{i}, l4proto{IPPROTO_TCP}, dport{53}}, reject{true}, "dns to this gateway"});
      }
      t.chains.push_back(std::move(in));
    }
  }
  add_counters(t);
  clip_comments(t);
  return t;
}

}  // namespace tprosshy::nft::plan
