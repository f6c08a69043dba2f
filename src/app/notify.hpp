#pragma once
// The systemd notify protocol (sd_notify(3)) without libsystemd: one datagram per message
// to $NOTIFY_SOCKET, a path or an abstract "@name". Without the variable nothing is sent.
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace tprosshy::app {

class notifier {
 public:
  // $NOTIFY_SOCKET, and $WATCHDOG_USEC unless $WATCHDOG_PID names another process.
  static notifier from_environment();
  notifier() = default;  // sends nothing
  notifier(std::string socket, std::optional<std::chrono::microseconds> watchdog_usec);

  bool enabled() const { return !socket_.empty(); }

  // Each returns whether the datagram went out; a failure is logged, never thrown, and
  // never blocks (a full queue drops the message).
  bool ready(std::string_view status = {}) const;  // READY=1, after start and each reload
  bool status(std::string_view line) const;        // STATUS=; newlines become spaces
  bool reloading() const;                          // RELOADING=1, MONOTONIC_USEC=<now>
  bool stopping() const;                           // STOPPING=1
  bool send(std::string_view message) const;       // "KEY=value\n..." as is

  // Half of WATCHDOG_USEC; nullopt when systemd watches nothing.
  std::optional<std::chrono::microseconds> watchdog_interval() const;
  // WATCHDOG=1 now and at every interval until cancelled (per-operation cancellation, as
  // the losing branch of `a || b`); returns at once without a watchdog; never throws. It
  // runs on the caller's executor, so a stalled executor starves it: that is what
  // systemd's watchdog is for.
  boost::asio::awaitable<void> watchdog() const;

 private:
  std::string socket_;
  std::optional<std::chrono::microseconds> watchdog_usec_;
};

}  // namespace tprosshy::app
