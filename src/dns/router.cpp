#include "dns/router.hpp"

#include "dns/message.hpp"

namespace tprosshy::dns {

namespace {
std::string normal(std::string_view d) {
  while (d.size() > 1 && d.back() == '.') d.remove_suffix(1);
  return d.empty() ? std::string(".") : lower(d);
}
}  // namespace

void router::add(std::string_view domain, std::size_t profile) {
  domains_.insert_or_assign(normal(domain), profile);
}

std::optional<std::size_t> router::match(std::string_view name) const {
  if (domains_.empty()) return std::nullopt;
  const std::string n = normal(name);
  if (n != ".") {
    // The whole name, then each suffix after a dot: longest first.
    for (std::size_t at = 0; at != std::string::npos;) {
      if (auto it = domains_.find(n.substr(at)); it != domains_.end()) return it->second;
      const auto dot = n.find('.', at);
      at = dot == std::string::npos ? dot : dot + 1;
    }
  }
  if (auto it = domains_.find("."); it != domains_.end()) return it->second;
  return std::nullopt;
}

}  // namespace tprosshy::dns
