#pragma once
// `tprosshy helper`: the one privileged process. It takes rulesets as data (protocol.hpp)
// over a Unix socket, confines each to what its caller may have (confine.hpp) and keeps
// one nftables table per connection: the table is owned by that connection's netlink
// socket, so it goes when the connection closes, and when the helper dies. It never runs
// a program.
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <string>

namespace tprosshy::helper {

inline constexpr const char* default_socket = "/run/tprosshy-helper.sock";

// With those of protocol.hpp.
namespace limits {
inline constexpr std::size_t connections = 64;         // at once, all callers
inline constexpr std::size_t user_connections = 8;     // at once, per non-root uid
inline constexpr std::chrono::seconds hello_time{5};   // to send hello after connecting
inline constexpr std::chrono::seconds frame_time{10};  // to finish a frame once started
// A non-root connection's learned addresses alive at once (learn adds kernel set elements).
inline constexpr std::size_t live_learned = 65536;
}  // namespace limits

struct options {
  // Where to listen: mode 0660 and group tprosshy when that group exists, else 0600.
  // Empty: the socket systemd passes (LISTEN_PID/LISTEN_FDS, fd 3), else default_socket.
  std::filesystem::path socket;
  // Whose members may connect to a socket it makes (`--group NAME`).
  std::string group = "tprosshy";
  // Serve the one connection on fd 0 (a connected Unix stream socket) and exit when it
  // closes; SIGINT, SIGTERM and SIGHUP are ignored meanwhile, so the daemon that spawned it
  // decides when its rules go.
  bool stdio = false;
};

// Runs until SIGINT or SIGTERM (a listening socket) or until the connection closes (stdio).
// Exit codes: 0; 64 fd 0 is not a connected Unix stream socket; 71 the socket cannot be
// made; 77 not root.
int serve(const options& o);

}  // namespace tprosshy::helper
