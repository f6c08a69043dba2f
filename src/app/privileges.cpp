#include "app/privileges.hpp"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include "net/fd_passing.hpp"

namespace tprosshy::app {

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

std::string self_exe() {
  std::error_code ec;
  auto p = std::filesystem::canonical("/proc/self/exe", ec);
  return ec ? std::string("/proc/self/exe") : p.string();
}

std::string in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path && *path ? path : "/usr/bin:/bin";
  for (std::size_t at = 0; at <= dirs.size();) {
    auto end = dirs.find(':', at);
    if (end == std::string::npos) end = dirs.size();
    auto candidate = dirs.substr(at, end - at) + "/" + name;
    if (dirs.compare(at, 1, "/") == 0 && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    at = end + 1;
  }
  errno = ENOENT;
  fail(name + " is not installed (not in PATH)");
}

}  // namespace

helper::client helper_for(const account& a) {
  int x[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, x) != 0) fail("socketpair");
  net::unique_fd here(x[0]), there(x[1]);
  const pid_t pid = ::fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    // Only async-signal-safe calls from here: become `a`, make the pair, send it, exit.
    int sv[2];
    if (::setgroups(0, nullptr) != 0 || ::setresgid(a.gid, a.gid, a.gid) != 0 ||
        ::setresuid(a.uid, a.uid, a.uid) != 0 ||
        ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      ::_exit(1);
    const std::uint8_t byte = 0;
    ::_exit(net::send_with_fds(x[1], std::span(&byte, 1), std::span<const int>(sv, 2)) == 1 ? 0
                                                                                            : 1);
  }
  there.reset();
  std::uint8_t byte = 0;
  std::vector<net::unique_fd> pair;
  const auto n = net::recv_with_fds(here.get(), std::span(&byte, 1), pair);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (n != 1 || pair.size() != 2) {
    errno = EPROTO;
    fail("cannot make a socket pair as " + a.name);
  }
  return helper::client::spawn({self_exe(), "helper", "--stdio"}, std::move(pair[0]),
                               std::move(pair[1]));
}

helper::client sudo_helper() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) fail("socketpair");
  return helper::client::spawn(
      {in_path("sudo"), "-p", "[sudo] password for %u, to start tprosshy's helper: ", "--",
       self_exe(), "helper", "--stdio"},
      net::unique_fd(sv[0]), net::unique_fd(sv[1]));
}

std::string sudoers_line() {
  // sudoers takes these characters in a command only escaped.
  auto escaped = [](const std::string& s) {
    std::string o;
    for (char ch : s) {
      if (std::strchr(",:=\\ ", ch)) o += '\\';
      o += ch;
    }
    return o;
  };
  std::string user;
  if (const char* s = std::getenv("SUDO_USER"); s && *s && ::geteuid() == 0)
    user = s;
  else if (auto a = tunnel::account_by_uid(::getuid()))
    user = a->name;
  else
    user = "#" + std::to_string(::getuid());
  return user + " ALL=(root) " + escaped(self_exe()) + " helper --stdio";
}

std::optional<account> sudo_user() {
  if (::geteuid() != 0) return std::nullopt;
  const char* s = std::getenv("SUDO_UID");
  if (!s || !*s) return std::nullopt;
  uid_t uid = 0;
  const auto end = s + std::strlen(s);
  if (auto [p, ec] = std::from_chars(s, end, uid); ec != std::errc{} || p != end || uid == 0)
    return std::nullopt;
  return tunnel::account_by_uid(uid);
}

bool owned_by(const std::filesystem::path& file, const account& a) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return errno == ENOENT || errno == EACCES;
  return st.st_uid == a.uid;
}

void become(const account& a) {
  if (::initgroups(a.name.c_str(), a.gid) != 0) fail("initgroups " + a.name);
  if (::setresgid(a.gid, a.gid, a.gid) != 0) fail("setresgid");
  if (::setresuid(a.uid, a.uid, a.uid) != 0) fail("setresuid");
  // Once dropped there is no way back: check, as a failed drop must never run on as root.
  if (::setuid(0) == 0 || ::geteuid() != a.uid || ::getegid() != a.gid) {
    errno = EPERM;
    fail("cannot drop root for " + a.name);
  }
  ::setenv("HOME", a.home.c_str(), 1);
  ::setenv("USER", a.name.c_str(), 1);
  ::setenv("LOGNAME", a.name.c_str(), 1);
  if (!a.shell.empty()) ::setenv("SHELL", a.shell.c_str(), 1);
  ::unsetenv("XDG_RUNTIME_DIR");  // root's, if sudo kept it
}

}  // namespace tprosshy::app
