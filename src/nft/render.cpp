// nft text for `tprosshy check` and the golden tests, printed from the same plan that
// netlink.cpp encodes.
#include <linux/rtnetlink.h>
#include <netinet/in.h>

#include <bit>
#include <sstream>

#include "nft/plan.hpp"
#include "nft/ruleset.hpp"

namespace tprosshy::nft {

namespace {

unsigned popcount(net::u128 v) {
  return std::popcount(static_cast<uint64_t>(v)) + std::popcount(static_cast<uint64_t>(v >> 64));
}

// A range that is exactly one CIDR block prints as the prefix (a bare address for a
// single host), as `nft list` does; any other range as first-last.
std::string format_range(const addr_range& r) {
  auto first = net::to_u128(r.first), span = net::to_u128(r.last) - first;
  unsigned bits = r.first.is_v4() ? 32 : 128;
  if ((span & (span + 1)) == 0 && (first & span) == 0) {
    unsigned len = bits - popcount(span);
    return len == bits ? r.first.to_string() : r.first.to_string() + "/" + std::to_string(len);
  }
  return r.first.to_string() + "-" + r.last.to_string();
}

std::string quoted(const std::string& s) { return '"' + s + '"'; }

const char* ip_keyword(plan::family f) { return f == plan::family::v4 ? "ip" : "ip6"; }

std::string proto_name(uint8_t p) {
  return p == IPPROTO_TCP ? "tcp" : p == IPPROTO_UDP ? "udp" : std::to_string(p);
}

const char* hook_name(plan::hook h) {
  return h == plan::hook::output       ? "output"
         : h == plan::hook::prerouting ? "prerouting"
         : h == plan::hook::forward    ? "forward"
                                       : "input";
}

std::string icmpv6_name(uint8_t t) {
  switch (t) {
    case 133:
      return "nd-router-solicit";
    case 134:
      return "nd-router-advert";
    case 135:
      return "nd-neighbor-solicit";
    case 136:
      return "nd-neighbor-advert";
    case 137:
      return "nd-redirect";
    default:
      return std::to_string(t);
  }
}

std::string reject_text(const plan::reject& how) {
  if (how.tcp_reset) return "reject with tcp reset";
  if (how.prohibited) return "reject with icmpx admin-prohibited";
  if (how.icmp)
    return how.icmp == plan::family::v4 ? "reject with icmp port-unreachable"
                                        : "reject with icmpv6 port-unreachable";
  return "reject";
}

std::string format_rule(const plan::rule& r) {
  std::string out;
  auto add = [&](const std::string& s) { out += (out.empty() ? "" : " ") + s; };
  for (size_t i = 0; i < r.matches.size(); ++i) {
    const auto& m = r.matches[i];
    if (auto* x = std::get_if<plan::iifname>(&m)) {
      add("iifname " + quoted(x->name));
    } else if (auto* x = std::get_if<plan::mark>(&m)) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "0x%08x", x->value);
      add(std::string("meta mark ") + buf);
    } else if (auto* x = std::get_if<plan::l4proto>(&m)) {
      // `tcp dport 53` says both the protocol and the port.
      bool port_follows =
          i + 1 < r.matches.size() && std::holds_alternative<plan::dport>(r.matches[i + 1]);
      if (port_follows)
        add(proto_name(x->proto) + " dport " +
            std::to_string(std::get<plan::dport>(r.matches[++i]).port));
      else
        add("meta l4proto " + proto_name(x->proto));
    } else if (auto* x = std::get_if<plan::dport>(&m)) {
      add("th dport " + std::to_string(x->port));
    } else if (auto* x = std::get_if<plan::daddr>(&m)) {
      add(std::string(x->addr.is_v4() ? "ip" : "ip6") + " daddr " + x->addr.to_string());
    } else if (auto* x = std::get_if<plan::daddr_in>(&m)) {
      add(std::string(ip_keyword(x->fam)) + " daddr @" + x->set);
    } else if (auto* x = std::get_if<plan::fib_type>(&m)) {
      add(std::string("fib daddr type ") + (x->rtn == RTN_LOCAL       ? "local"
                                            : x->rtn == RTN_BROADCAST ? "broadcast"
                                                                      : "multicast"));
    } else if (auto* x = std::get_if<plan::daddr_net>(&m)) {
      add(std::string(x->net.network.is_v4() ? "ip" : "ip6") + " daddr " + x->net.to_string());
    } else if (auto* x = std::get_if<plan::icmpv6_type>(&m)) {
      add("icmpv6 type " + icmpv6_name(x->type));
    } else if (std::holds_alternative<plan::ct_dnat>(m)) {
      add("ct status dnat");
    } else if (auto* x = std::get_if<plan::skuid>(&m)) {
      add("meta skuid " + std::to_string(x->uid));
    }
  }
  if (!r.counter.empty()) add("counter name " + quoted(r.counter));
  if (std::holds_alternative<plan::ret>(r.action))
    add("return");
  else if (auto* j = std::get_if<plan::jump>(&r.action))
    add("jump " + j->chain);
  else if (auto* d = std::get_if<plan::redirect>(&r.action))
    add("redirect to :" + std::to_string(d->port));
  else if (std::holds_alternative<plan::accept>(r.action))
    add("accept");
  else
    add(reject_text(std::get<plan::reject>(r.action)));
  if (!r.comment.empty()) add("comment " + quoted(r.comment));
  return out;
}

void render_set(std::ostream& o, const plan::set& s) {
  o << "\tset " << s.name << " {\n";
  o << "\t\ttype " << (s.fam == plan::family::v4 ? "ipv4_addr" : "ipv6_addr") << "\n";
  if (s.interval) o << "\t\tflags interval\n";
  if (s.timeout) o << "\t\tflags timeout\n";
  if (!s.comment.empty()) o << "\t\tcomment " << quoted(s.comment) << "\n";
  if (!s.elements.empty() || !s.timed.empty()) {
    std::vector<std::string> items;
    size_t width = 0;
    for (const auto& e : s.elements) width += (items.emplace_back(format_range(e))).size() + 2;
    for (const auto& e : s.timed)
      width += (items.emplace_back(e.address.to_string() + " timeout " +
                                   std::to_string(e.ttl.count()) + "s"))
                   .size() +
               2;
    // Short lists on one line, long ones one element per line.
    bool one_line = width <= 60;
    o << "\t\telements = {" << (one_line ? " " : "\n\t\t\t");
    for (size_t i = 0; i < items.size(); ++i)
      o << items[i] << (i + 1 == items.size() ? "" : one_line ? ", " : ",\n\t\t\t");
    o << (one_line ? " }\n" : "\n\t\t}\n");
  }
  o << "\t}\n\n";
}

void render_table(std::ostream& o, const plan::table& t) {
  o << "table inet " << t.name << " {\n";
  for (const auto& c : t.counters) o << "\tcounter " << c << " {\n\t}\n\n";
  for (const auto& s : t.sets) render_set(o, s);
  for (size_t i = 0; i < t.chains.size(); ++i) {
    const auto& c = t.chains[i];
    if (!c.note.empty()) o << "\t# " << c.note << "\n";
    o << "\tchain " << c.name << " {\n";
    if (c.where != plan::hook::none)
      o << "\t\ttype " << (c.filter ? "filter" : "nat") << " hook " << hook_name(c.where)
        << " priority " << c.priority << "; policy accept;\n";
    for (const auto& rule : c.rules) o << "\t\t" << format_rule(rule) << "\n";
    o << "\t}\n" << (i + 1 == t.chains.size() ? "" : "\n");
  }
  o << "}\n";
}

}  // namespace

std::string render(const ruleset& r) {
  std::ostringstream o;
  o << "# tprosshy ruleset. tprosshy installs it over netlink as one atomic batch, owned by\n"
       "# its process (the kernel drops the table when tprosshy exits); `nft -f` on this text\n"
       "# creates the same table, minus that ownership.\n";
  render_table(o, plan::make(r));
  if (r.lock == lock_mode::on) {
    o << "\n# lockdown: in the same batch, a table without the owner flag. It stays when\n"
         "# tprosshy is gone (a crash, SIGKILL, a restart) until a clean stop or `tprosshy "
         "unlock`.\n";
    render_table(o, plan::make_lock(r));
  }
  return o.str();
}

}  // namespace tprosshy::nft
