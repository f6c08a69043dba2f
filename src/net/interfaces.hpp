#pragma once
// Local addresses: those of named interfaces, and whether one can be bound at all.
#include <string>
#include <vector>

#include "net/prefix.hpp"

namespace tprosshy::net {

// The addresses of the named interfaces, IPv6 link-local ones left out, in the order the
// kernel lists them.
std::vector<address> interface_addresses(const std::vector<std::string>& names);

// False when this machine has no such address (or no such family), so binding it fails.
bool can_bind(const address& a);

}  // namespace tprosshy::net
