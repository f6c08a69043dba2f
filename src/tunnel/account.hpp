#pragma once
// An account of the password database, as ssh is run under it: a root tprosshy's
// `ssh_user`, or the user a run under sudo becomes.
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace tprosshy::tunnel {

struct account {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string name, home, shell;
  std::vector<gid_t> groups;  // supplementary, the primary group included
};

std::optional<account> account_by_uid(uid_t uid);
std::optional<account> account_by_name(const std::string& name);

// This process's environment for a program run as `a`: HOME, USER, LOGNAME and SHELL are
// `a`'s, and what names another user's sockets (SSH_AUTH_SOCK, XDG_RUNTIME_DIR) is dropped.
std::vector<std::string> environment_for(const account& a);

}  // namespace tprosshy::tunnel
