#pragma once
// The private directory that holds the ssh masters' control sockets: mode 0700, so only
// tprosshy's own user can reach a tunnel, and removed with everything in it at the end.
// It holds a lock file for the process's life: the next tprosshy of the same user removes
// the directories of runs killed outright, whose locks nobody holds.
// With an owner (a root tprosshy's ssh_user) the sockets go in a subdirectory that account
// owns (0700), inside ours (0711, root's), so that its ssh can bind them and nobody else can
// reach them; ours keeps the files only we write.
#include <optional>
#include <string>

#include "tunnel/account.hpp"

namespace tprosshy::tunnel {

class control_dir {
 public:
  // Creates a fresh directory under $RUNTIME_DIRECTORY (systemd's), else $TMPDIR, else
  // /tmp; with an owner, /tmp when the first is closed to others. Throws std::system_error.
  explicit control_dir(const std::optional<account>& owner = std::nullopt);
  ~control_dir();
  control_dir(const control_dir&) = delete;
  control_dir& operator=(const control_dir&) = delete;

  const std::string& path() const { return path_; }
  // The control socket path for a tunnel named `name` ([a-z0-9_.-]).
  std::string socket(const std::string& name) const { return sockets_ + "/" + name; }
  // A file of ours (not the owner's to change) named `name`.
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_, sockets_;
  bool owned_ = false;
  int lock_ = -1;  // flock(LOCK_EX) on path_/lock
};

}  // namespace tprosshy::tunnel
