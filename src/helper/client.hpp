#pragma once
// The daemon's side of the helper (server.hpp): blocking calls, answered in microseconds to
// milliseconds. An error reply throws std::system_error(errno, generic_category, message),
// so EPERM from the helper reads like EPERM from the kernel; a helper that is gone throws
// ECONNRESET. The table lives as long as this object's connection.
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "helper/protocol.hpp"
#include "net/fd.hpp"
#include "nft/ruleset.hpp"

namespace tprosshy::helper {

class client {
 public:
  // Over an already connected Unix stream socket; does not greet (call hello()).
  explicit client(net::unique_fd connected, pid_t spawned = 0);
  ~client();  // closes the connection (the helper drops the table); reaps a spawned helper
  client(client&&) noexcept;
  client& operator=(client&&) noexcept;

  // Connected to a running helper's socket and greeted.
  static client connect(const std::filesystem::path& path);
  // A helper of our own: `exe helper --stdio` with its end of a socketpair as fd 0 and no
  // other descriptor of ours; greeted. It ends when this connection closes, not with us
  // (no PDEATHSIG), so a crashed daemon's rules still go in order. `exe` must be root's to
  // work: a non-root helper exits 77, which throws ECONNRESET naming that exit.
  static client spawn(const std::filesystem::path& exe = "/proc/self/exe");
  // The same with another command line (argv[0] the program's path, e.g. sudo's) over a
  // socket pair made by the caller: the helper names its caller by the credentials of
  // whoever made the pair.
  static client spawn(const std::vector<std::string>& argv, net::unique_fd ours,
                      net::unique_fd theirs);

  void hello();  // sends /proc/self/ns/net by SCM_RIGHTS
  // The helper confines what it installs (confine.hpp): table, mark and, for a non-root
  // caller, skuid are its choice whatever `r` says.
  void install(const nft::ruleset& r);
  // ttl is clamped to limits::ttl (a day): learning again refreshes it.
  // With `forget`, that address leaves the profile's set in the same batch.
  void learn(const std::string& profile, const net::address& a, std::chrono::seconds ttl,
             std::optional<net::address> forget = std::nullopt);
  void remove();
  // Packets the installed table refused so far, by profile (0 from each install on).
  std::map<std::string, uint64_t> refused();
  // The write end of the connection's lifeline (see helper::lifeline): every ssh inherits
  // it, so the table outlives a crashed tprosshy until its ssh children are gone.
  net::unique_fd lifeline();
  // A new socket (AF_INET or AF_INET6; SOCK_STREAM or SOCK_DGRAM) carrying the caller's
  // mark, which its table lets through unredirected.
  net::unique_fd marked_socket(int family, int type);

  int native_handle() const { return fd_.get(); }
  pid_t pid() const { return pid_; }  // the spawned helper, or 0

 private:
  // Sends `r` (with `fd_out` attached when >= 0) and waits for the reply; `fd_in` takes a
  // descriptor that comes with it.
  reply call(const request& r, int fd_out = -1, net::unique_fd* fd_in = nullptr);
  [[noreturn]] void gone(const std::string& why);
  bool ready(short events) const;  // false after reply_seconds
  void close();

  net::unique_fd fd_;
  pid_t pid_ = 0;
};

}  // namespace tprosshy::helper
