#pragma once
// One profile's ssh process, supervised: started, probed until its SOCKS listener answers,
// and restarted with capped, jittered exponential backoff whenever it exits.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tunnel/ssh.hpp"

namespace tprosshy::tunnel {

enum class state { starting, up, down, stopped };

struct options {
  std::string profile;
  std::string destination;
  std::vector<std::string> ssh_args;
  std::chrono::milliseconds backoff_min{500};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds ready_timeout{60000};
};

class tunnel {
 public:
  // Called on every change of state; `why` carries ssh's last stderr line when it went down.
  using observer = std::function<void(state s, const std::string& why)>;

  tunnel(boost::asio::any_io_executor ex, options o, observer on_change = {});
  ~tunnel();
  tunnel(const tunnel&) = delete;
  tunnel& operator=(const tunnel&) = delete;

  // Runs until stop(). Spawn it once.
  boost::asio::awaitable<void> run();
  // Asks ssh to exit (SIGTERM) and ends run() without restarting.
  void stop();

  state current() const;
  bool up() const { return current() == state::up; }
  tcp::endpoint socks() const;  // valid while up()
  const options& config() const;
  std::string last_error() const;  // ssh's last stderr line, or why the start failed

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace tprosshy::tunnel
