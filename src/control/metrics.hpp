#pragma once
// The Prometheus endpoint: HTTP/1.1 with keep-alive, GET (or HEAD) /metrics answered from
// a callback as text format 0.0.4; 404 for any other path, 405 for other methods. Each
// request must arrive within a deadline and fit a bound; nothing waits but the callback.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

namespace tprosshy::control {

inline constexpr const char* metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

struct metrics_limits {
  std::chrono::milliseconds request_time{15000};  // per request, idle keep-alive included
  std::chrono::milliseconds reply_time{15000};
  std::size_t header_bytes = 8192;  // more: 431, and the connection closes
  std::size_t body_bytes = 4096;    // more: 413, likewise
  std::size_t connections = 64;     // more at once are closed on accept
};

class metrics_server {
 public:
  // Called on the server's executor for each GET; an exception gives 500.
  using source = std::function<std::string()>;

  // Binds and listens (port 0: any free one). Throws boost::system::system_error.
  metrics_server(boost::asio::any_io_executor ex, const boost::asio::ip::tcp::endpoint& listen,
                 source text, metrics_limits limits = {});
  ~metrics_server();  // stop()
  metrics_server(const metrics_server&) = delete;
  metrics_server& operator=(const metrics_server&) = delete;

  boost::asio::ip::tcp::endpoint local_endpoint() const;
  void start();  // spawns the accept loop
  void stop();   // stops accepting and closes every connection

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace tprosshy::control
