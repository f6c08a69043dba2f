#pragma once
// The control socket's protocol. A client connects, sends one request line, reads one
// reply until the server closes. Requests:
//   status                   the status as text
//   status json              the status as JSON
//   reload <absolute path>   load that config file and apply it, waiting for the outcome
// A reply is its exit code in decimal, a newline, then text (any bytes) until the end:
//   "0\n<status text>", "78\n<file>:3:5: unknown key 'x'".
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

#include "net/exit_codes.hpp"

namespace tprosshy::control {

// A request line may be this long, its newline not counted.
inline constexpr std::size_t max_request = 4096;

// Exit codes (net/exit_codes.hpp) the server itself answers with; the reload handler adds
// its own.
inline constexpr int reply_ok = exit_code::ok, reply_usage = exit_code::usage,
                     reply_software = exit_code::software, reply_busy = exit_code::tempfail;

struct reply {
  int code = reply_ok;
  std::string text;
  bool operator==(const reply&) const = default;
};

struct request {
  enum class verb { status, status_json, reload };
  verb what = verb::status;
  std::string config;  // reload: an absolute path
  bool operator==(const request&) const = default;
};

struct bad_request : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One line, without its newline (a trailing "\r" is allowed). Throws bad_request saying
// what is wrong.
request parse_request(std::string_view line);

// The request line for reloading `config`, made absolute against the current directory
// (the server's is another). Throws bad_request if the path cannot be sent in one line.
std::string reload_line(std::string_view config);

std::string encode(const reply& r);
// Throws bad_request if `wire` is not a whole reply.
reply decode(std::string_view wire);

}  // namespace tprosshy::control
