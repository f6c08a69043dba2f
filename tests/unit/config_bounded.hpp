#pragma once
// Runs a piece of config loading in a child process with a time and a memory limit, so that
// a loader that crashes, hangs or eats memory fails the test that fed it instead of taking
// the whole test binary (or the machine) down with it.
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>

#include "config/config.hpp"

namespace tprosshy::test {

struct outcome {
  std::string error;  // what() of the config::error thrown, "" if none
  std::string other;  // anything else: another exception, a signal, a timeout
  bool ok() const { return error.empty() && other.empty(); }
};

inline std::ostream& operator<<(std::ostream& os, const outcome& o) {
  return os << (o.ok() ? "no error" : o.error.empty() ? o.other : o.error);
}

// `f` runs in a child limited to `seconds` of wall time and `memory` bytes of address space.
inline outcome bounded(const std::function<void()>& f, double seconds = 2.0,
                       std::size_t memory = std::size_t{1} << 30) {
  int fds[2];
  if (pipe(fds) != 0) return {"", "pipe failed"};
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) return {"", "fork failed"};
  if (pid == 0) {
    close(fds[0]);
#ifndef __SANITIZE_ADDRESS__  // AddressSanitizer reserves terabytes of address space up front
    rlimit as{memory, memory};
    setrlimit(RLIMIT_AS, &as);
#else
    (void)memory;
#endif
    std::string report = "ok";
    try {
      f();
    } catch (const config::error& e) {
      report = std::string("E") + e.what();
    } catch (const std::exception& e) {
      report = std::string("X") + typeid(e).name() + ": " + e.what();
    } catch (...) {
      report = "Xunknown exception";
    }
    auto left = report.size();
    for (const char* p = report.data(); left > 0;) {
      auto n = write(fds[1], p, left);
      if (n <= 0) break;
      p += n;
      left -= static_cast<std::size_t>(n);
    }
    _exit(0);
  }
  close(fds[1]);
  std::string got;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  bool timed_out = false;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[4096];
    auto n = read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  close(fds[0]);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  if (timed_out) {
    char text[64];
    std::snprintf(text, sizeof text, "timed out after %g s", seconds);
    return {"", text};
  }
  if (WIFSIGNALED(status)) return {"", "killed by signal " + std::to_string(WTERMSIG(status))};
  if (got == "ok") return {};
  if (got.starts_with("E")) return {got.substr(1), ""};
  return {"", got.empty() ? "no report" : got.substr(1)};
}

}  // namespace tprosshy::test
