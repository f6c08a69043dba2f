#pragma once
// Which profile resolves a name: the one with the longest domain suffix that matches at a
// label boundary; "." matches every name. Case and trailing dots do not matter.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace tprosshy::dns {

class router {
 public:
  // A later add of the same domain replaces the earlier profile.
  void add(std::string_view domain, std::size_t profile);
  std::optional<std::size_t> match(std::string_view name) const;
  bool empty() const { return domains_.empty(); }

 private:
  std::unordered_map<std::string, std::size_t> domains_;  // lower case, no trailing dot
};

}  // namespace tprosshy::dns
