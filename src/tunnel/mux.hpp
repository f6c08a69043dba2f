#pragma once
// OpenSSH's connection-multiplexing protocol (PROTOCOL.mux, version 4), the client side:
// the few messages tprosshy sends to its own ssh masters, and their replies.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tprosshy::tunnel::mux {

using socket = boost::asio::local::stream_protocol::socket;
using bytes = std::vector<std::uint8_t>;

enum type : std::uint32_t {
  hello = 0x00000001,
  new_session = 0x10000002,
  alive_check = 0x10000004,
  new_stdio_fwd = 0x10000008,
  ok = 0x80000001,
  permission_denied = 0x80000002,
  failure = 0x80000003,
  exit_message = 0x80000004,
  alive = 0x80000005,
  session_opened = 0x80000006,
  tty_alloc_fail = 0x80000008,
};

constexpr std::uint32_t version = 4;
// Far above any reply a master sends; a longer packet means the peer is not one.
constexpr std::size_t max_packet = 64 * 1024;

// Whole packets, length included.
bytes encode_hello();
bytes encode_alive_check(std::uint32_t id);
bytes encode_stdio_fwd(std::uint32_t id, std::string_view host, std::uint16_t port);
bytes encode_new_session(std::uint32_t id, std::string_view command);

// A reply from the master. `id` is the request id it answers (the session id for
// exit_message); `value` the pid (alive), session id (session_opened) or exit code
// (exit_message); `text` the reason of permission_denied and failure.
struct message {
  std::uint32_t type = 0;
  std::uint32_t id = 0;
  std::uint32_t value = 0;
  std::string text;
};

// Decodes one packet body (without its length). nullopt if it is malformed.
std::optional<message> decode(std::span<const std::uint8_t> body);

// Reads one packet. Throws boost::system::system_error (eof when the master closed the
// connection) or std::runtime_error for a malformed or oversized packet.
boost::asio::awaitable<message> read(socket& s);

// Passes each descriptor with SCM_RIGHTS, one per message with a single byte, as ssh's
// mm_receive_fd expects. Call it only after the request those descriptors belong to.
// Throws boost::system::system_error.
boost::asio::awaitable<void> send_fds(socket& s, std::span<const int> fds);

// Connects to a master's control socket and sends `first` (the hello and a request) in
// one write. With `master` (not 0) the socket must be that process's (SO_PEERCRED), so that
// nothing else listening at `path` gets the request or the descriptors that follow it.
// Throws boost::system::system_error, or std::runtime_error for another process's socket.
boost::asio::awaitable<socket> open(std::string path, bytes first, int master = 0);

// Reads the master's hello; throws std::runtime_error if it speaks another version.
boost::asio::awaitable<void> expect_hello(socket& s);

}  // namespace tprosshy::tunnel::mux
