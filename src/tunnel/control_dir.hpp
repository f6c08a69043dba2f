#pragma once
// The private directory that holds the ssh masters' control sockets: mode 0700, so only
// tprosshy's own user can reach a tunnel, and removed with everything in it at the end.
#include <string>

namespace tprosshy::tunnel {

class control_dir {
 public:
  // Creates a fresh directory under $RUNTIME_DIRECTORY (systemd's), else $TMPDIR, else
  // /tmp. Throws std::system_error.
  control_dir();
  ~control_dir();
  control_dir(const control_dir&) = delete;
  control_dir& operator=(const control_dir&) = delete;

  const std::string& path() const { return path_; }
  // The control socket path for a tunnel named `name` ([a-z0-9_.-]).
  std::string socket(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace tprosshy::tunnel
