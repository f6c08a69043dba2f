#pragma once
// The control socket: a Unix stream socket, mode 0600, that answers one request line per
// connection (protocol.hpp) and closes. Status is rendered here from a snapshot; reload is
// the caller's.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "control/protocol.hpp"
#include "control/status.hpp"

namespace tprosshy::control {

struct handlers {
  std::function<control::status()> status;  // a snapshot, taken on the server's executor
  // Loads and applies an absolute config path; 0 applied, 78 with the errors, ... An
  // exception becomes reply 70 with its message.
  std::function<boost::asio::awaitable<reply>(std::string config)> reload;
};

struct server_limits {
  std::chrono::milliseconds request_time{5000};  // to send the request line, then dropped
  std::chrono::milliseconds reply_time{10000};   // to take the reply, then dropped
  std::size_t sessions = 16;                     // more at once are answered 75 (busy)
};

class server {
 public:
  // Creates the socket at `path`, owned by this user with mode 0600, creating a missing
  // directory with mode 0700. Refuses (std::system_error naming path and cause) a path
  // that is a symbolic link, is not a socket, is owned by another user, or whose
  // directory other users may write to (unless sticky, like /tmp), and a socket that
  // answers a connect: another tprosshy runs there. A socket that refuses connections is
  // stale and replaced.
  server(boost::asio::any_io_executor ex, std::filesystem::path path, handlers h,
         server_limits limits = {});
  ~server();  // stop()
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  const std::filesystem::path& path() const;
  void start();  // spawns the accept loop
  // Stops accepting, closes open connections, removes the socket file if it is still this
  // server's. A reload in progress runs to its end; its client gets no reply.
  void stop();

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace tprosshy::control
