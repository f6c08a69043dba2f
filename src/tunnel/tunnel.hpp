#pragma once
// One profile's ssh, run as a ControlMaster on a private Unix socket and supervised: ready
// when that socket answers an alive check with our own child's pid, restarted with capped,
// jittered exponential backoff whenever ssh exits. Each flow is handed to ssh itself
// (MUX_C_NEW_STDIO_FWD with the client's descriptor), so ssh relays its bytes and no TCP
// port is ever opened for a tunnel.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "net/fd.hpp"
#include "tunnel/mux.hpp"

namespace tprosshy::tunnel {

using tcp = boost::asio::ip::tcp;

enum class state { starting, up, down, stopped };

struct options {
  std::string profile;  // for the log
  std::string destination;
  std::vector<std::string> ssh_args;
  std::string control_path;  // the master's socket; its directory must be private
  std::chrono::milliseconds backoff_min{500};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds ready_timeout{60000};
  // ssh opens channels one after another: thousands of new flows can queue for tens of
  // seconds on a healthy tunnel, so only a long wait means a dead one.
  std::chrono::milliseconds setup_timeout{120000};
  std::chrono::milliseconds stop_grace{500};  // after SIGTERM, before SIGKILL
  // Channel opens in progress at once: the master's accept queue holds 64 connections, and
  // a full one refuses connects.
  std::size_t max_setups = 48;
  // Open flows: OpenSSH allows 16384 channels, and each flow takes two.
  std::size_t max_flows = 8000;
};

struct flow_result {
  bool opened = false;     // ssh opened the channel to the destination
  bool reset = false;      // the client was reset: refused, failed, or ssh went away
  std::string why;         // why it was reset
  std::uint64_t up = 0;    // bytes from the client to the destination
  std::uint64_t down = 0;  // and back
};

// A byte stream through the tunnel: our end of a socketpair whose other end ssh relays.
// The channel lives while `control` is open.
struct stream {
  boost::asio::local::stream_protocol::socket data;
  mux::socket control;
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
  // Asks ssh to exit (SIGTERM, SIGKILL after stop_grace) and ends run() without restarting.
  // ssh's flows are reset.
  void stop();

  state current() const;
  bool up() const { return current() == state::up; }
  int pid() const;            // ssh's pid while it runs, else 0
  std::size_t flows() const;  // flows being set up or carried
  const options& config() const;
  std::string last_error() const;  // ssh's last stderr line, or why the start failed

  // Hands the client's connection to ssh as a channel to `dst` and returns when the flow
  // ends. The client is reset unless the flow ended normally: ssh refused or could not open
  // the channel, the setup timed out, or ssh exited while carrying it.
  boost::asio::awaitable<flow_result> carry(net::unique_fd client, tcp::endpoint dst);

  // A stream to `dst` through the tunnel. Throws std::runtime_error.
  boost::asio::awaitable<stream> open(tcp::endpoint dst);

  // Runs `command` on the server through the master; returns what it printed. Throws
  // std::runtime_error when it cannot run or exits non-zero.
  boost::asio::awaitable<std::string> exec(std::string command, std::chrono::milliseconds timeout);

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace tprosshy::tunnel
