#pragma once
// Boost 1.81's Process v2 with BOOST_PROCESS_USE_STD_FS compiles only when these two come
// first (checked on Debian 12: without them, boost/process/v2 fails to compile there).
// clang-format off
#include <boost/optional.hpp>
#include <boost/type_traits.hpp>
#include <boost/process/v2.hpp>
// clang-format on

#include <grp.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <boost/asio/any_io_executor.hpp>
#include <csignal>
#include <optional>
#include <string>
#include <vector>

#include "tunnel/account.hpp"

namespace tprosshy::tunnel {

namespace bp = boost::process::v2;

// Runs in the child between fork and exec: the child dies with us, even on SIGKILL, and
// sits in its own process group so a terminal's ^C reaches only tprosshy, which then
// stops its children in order. With an account, the child becomes it first: a changed uid
// clears the parent-death signal, so that comes after.
struct child_setup {
  const account* as = nullptr;

  template <typename Launcher>
  bp::error_code on_exec_setup(Launcher&, const bp::filesystem::path&, const char* const*) {
    ::setpgid(0, 0);
    if (as) {
      if (::setgroups(as->groups.size(), as->groups.data()) != 0 ||
          ::setresgid(as->gid, as->gid, as->gid) != 0 ||
          ::setresuid(as->uid, as->uid, as->uid) != 0)
        return bp::error_code(errno, bp::system_category());
      if (as->uid != 0 && ::setuid(0) == 0) return bp::error_code(EPERM, bp::system_category());
    }
    // tprosshy blocks its stop signals until it handles them; ssh must not inherit that.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0)
      return bp::error_code(errno, bp::system_category());
    // The parent may have died between fork and prctl.
    if (::getppid() == 1) ::_exit(1);
    return {};
  }
};

// The child's environment. Not bp::process_environment: header-only Boost 1.81 declares its
// on_setup but never defines it.
struct environment {
  explicit environment(std::vector<std::string> v) : vars(std::move(v)) {
    for (auto& s : vars) ptrs.push_back(s.c_str());
    ptrs.push_back(nullptr);
  }
  template <typename Launcher>
  bp::error_code on_setup(Launcher& l, const bp::filesystem::path&, const char* const*) {
    l.env = ptrs.data();
    return {};
  }
  std::vector<std::string> vars;
  std::vector<const char*> ptrs;
};

// Starts `exe` with `args`, as `as` when given (with its environment_for).
template <typename Stdio>
bp::process launch(boost::asio::any_io_executor ex, const std::string& exe,
                   const std::vector<std::string>& args, Stdio&& stdio,
                   const std::optional<account>& as) {
  if (!as) return bp::process(ex, exe, args, std::forward<Stdio>(stdio), child_setup{});
  return bp::process(ex, exe, args, std::forward<Stdio>(stdio), child_setup{&*as},
                     environment(environment_for(*as)));
}

}  // namespace tprosshy::tunnel
