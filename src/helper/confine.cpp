#include "helper/confine.hpp"

#include <algorithm>
#include <system_error>

namespace tprosshy::helper {

namespace {

[[noreturn]] void refuse(const std::string& why) {
  throw std::system_error(EPERM, std::generic_category(), "install: " + why);
}

void check_port(const port_check& owns, port_use use, uint16_t port, const caller& c,
                const std::string& field) {
  auto why = owns(use, port, c.uid);
  if (!why.empty()) refuse(field + " " + std::to_string(port) + ": " + why);
}

}  // namespace

std::string table_for(const caller& c) {
  return c.uid == 0 ? "tprosshy" : "tprosshy_u" + std::to_string(c.uid);
}

uint32_t mark_for(const caller& c) { return c.uid == 0 ? root_mark : user_mark; }

nft::ruleset confine(nft::ruleset r, const caller& c, const port_check& owns) {
  r.table = table_for(c);
  r.mark = mark_for(c);
  if (c.uid == 0) return r;
  // The lock outlives every process, so only root may put it there, and a user's install
  // leaves root's alone.
  if (r.lock == nft::lock_mode::on)
    refuse("lockdown: the lock table outlives any process and needs a root daemon (uid " +
           std::to_string(c.uid) + ")");
  r.lock = nft::lock_mode::leave;
  if (!r.interfaces.empty())
    refuse("interfaces: gateway mode needs a root daemon (uid " + std::to_string(c.uid) + ")");
  if (!r.output) refuse("output: a user's table redirects this machine's own traffic only");
  r.skuid = c.uid;
  bool tcp = std::any_of(r.profiles.begin(), r.profiles.end(),
                         [](const auto& p) { return p.learned || !p.v4.empty() || !p.v6.empty(); });
  if (tcp) check_port(owns, port_use::tcp_listen, r.tcp_port, c, "tcp_port");
  if (r.capture_dns) {
    check_port(owns, port_use::udp_bound, r.dns_port, c, "dns_port");
    check_port(owns, port_use::tcp_listen, r.dns_port, c, "dns_port");
  }
  return r;
}

}  // namespace tprosshy::helper
