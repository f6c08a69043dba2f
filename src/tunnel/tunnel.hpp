#pragma once
// One profile's ssh, run as a ControlMaster on a private Unix socket and supervised: ready
// when that socket answers an alive check with our own child's pid, restarted with capped,
// jittered exponential backoff whenever ssh exits. Each flow is handed to ssh itself
// (MUX_C_NEW_STDIO_FWD with the client's descriptor), so ssh relays its bytes and no TCP
// port is ever opened for a tunnel.
#include <array>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "net/fd.hpp"
#include "tunnel/account.hpp"
#include "tunnel/mux.hpp"

namespace tprosshy::tunnel {

using tcp = boost::asio::ip::tcp;

enum class state { starting, up, down, stopped };

struct options {
  std::string profile;  // for the log
  std::string destination;
  std::vector<std::string> ssh_args;
  std::string control_path;   // the master's socket; its directory must be private
  std::optional<account> as;  // ssh runs as this account (a root tprosshy's ssh_user)
  int lifeline = -1;  // ssh's stdin, so it holds it (runtime::kernel::lifeline); -1: /dev/null
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
  // Flows of one source (an IPv4 address, an IPv6 /64) being opened at once. A gateway sets
  // a quarter of max_flows, so that a LAN host dialling thousands of addresses that never
  // answer cannot fill the tunnel for the others; a laptop's flows all share one source.
  std::size_t max_setups_per_source = SIZE_MAX;
  // Active probes: a channel through this master to `probe`, every `probe_interval`
  // (start to start). Without `probe_must_open` any answer counts (opened or refused);
  // silence for `probe_timeout` is a failure, checked again by a probe `probe_timeout` after
  // the failed one started. The tunnel serves only after a probe passed; two failures in a
  // row take it out of service and restart its ssh.
  tcp::endpoint probe{boost::asio::ip::make_address_v4("127.0.0.1"), 22};
  bool probe_must_open = false;
  std::chrono::milliseconds probe_interval{5000};
  std::chrono::milliseconds probe_timeout{3000};
};

// Probe latencies, as a Prometheus histogram keeps them.
struct probe_histogram {
  static constexpr std::array<double, 12> bounds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                 0.1,   0.25,   0.5,   1,    2.5,   5};
  std::array<std::uint64_t, bounds.size()> buckets{};  // cumulative: observations <= bound
  std::uint64_t count = 0;
  double sum = 0;  // seconds
  void observe(double seconds);
};

struct health {
  bool healthy = false;  // passed its last probe, and not two failed in a row since
  std::optional<std::chrono::steady_clock::time_point> healthy_since;
  std::optional<std::chrono::microseconds> last_latency;
  std::string last_failure;  // why the last failed probe failed
  probe_histogram probes;
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
  // Serving: ssh is up and its last probe passed.
  bool up() const;
  const struct health& health() const;
  // Probes now rather than at the next interval (a flow setup timed out on it).
  void probe_now();
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
