#pragma once
// Boost 1.81's Process v2 with BOOST_PROCESS_USE_STD_FS compiles only when these two come
// first (see DESIGN.md, facts checked).
// clang-format off
#include <boost/optional.hpp>
#include <boost/type_traits.hpp>
#include <boost/process/v2.hpp>
// clang-format on

#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>

namespace tprosshy::tunnel {

namespace bp = boost::process::v2;

// Runs in the child between fork and exec: the child dies with us, even on SIGKILL, and
// sits in its own process group so a terminal's ^C reaches only tprosshy, which then
// stops its children in order.
struct child_setup {
  template <typename Launcher>
  bp::error_code on_exec_setup(Launcher&, const bp::filesystem::path&, const char* const*) {
    ::setpgid(0, 0);
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

}  // namespace tprosshy::tunnel
