#include "helper/client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "net/exit_codes.hpp"
#include "net/fd_passing.hpp"

extern char** environ;

namespace tprosshy::helper {

namespace {

[[noreturn]] void fail(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), "helper: " + what);
}

constexpr int reply_seconds = 30;  // a helper that takes longer is stuck

}  // namespace

client::client(net::unique_fd connected, pid_t spawned) : fd_(std::move(connected)), pid_(spawned) {
  timeval t{reply_seconds, 0};
  ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
  ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &t, sizeof t);
}

client::client(client&& o) noexcept : fd_(std::move(o.fd_)), pid_(std::exchange(o.pid_, 0)) {}

client& client::operator=(client&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = std::move(o.fd_);
    pid_ = std::exchange(o.pid_, 0);
  }
  return *this;
}

client::~client() { close(); }

void client::close() {
  fd_.reset();
  // It exits as soon as it sees the close and its netlink socket is gone.
  if (pid_ > 0)
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  pid_ = 0;
}

client client::connect(const std::filesystem::path& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.native().size() >= sizeof a.sun_path) fail(ENAMETOOLONG, path.string());
  std::memcpy(a.sun_path, path.c_str(), path.native().size());
  // CLOEXEC: an ssh child holding it would keep the table alive after we die.
  net::unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) fail(errno, "socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    fail(errno, "cannot connect to " + path.string());
  client c(std::move(fd));
  c.hello();
  return c;
}

client client::spawn(const std::filesystem::path& exe) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) fail(errno, "socketpair");
  // The binary's own path, so that the helper shows as tprosshy (not "exe") in ps.
  std::error_code ec;
  auto path = std::filesystem::canonical(exe, ec);
  if (ec) path = exe;
  return spawn({path.string(), "helper", "--stdio"}, net::unique_fd(sv[0]), net::unique_fd(sv[1]));
}

client client::spawn(const std::vector<std::string>& args, net::unique_fd ours,
                     net::unique_fd theirs) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_adddup2(&fa, theirs.get(), 0);  // dup2 clears CLOEXEC on fd 0
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);        // whatever lacks CLOEXEC, too
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  // argv[0] names the program run; the helper itself shows as "tprosshy".
  pid_t pid = 0;
  int rc = ::posix_spawn(&pid, copy.front().c_str(), &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) fail(rc, "cannot start " + copy.front());
  theirs.reset();
  client c(std::move(ours), pid);
  c.hello();
  return c;
}

void client::gone(const std::string& why) {
  std::string what = "the helper is gone (" + why + ")";
  if (pid_ > 0) {
    int status = 0;
    if (::waitpid(pid_, &status, 0) == pid_) {
      pid_ = 0;
      what = WIFEXITED(status)
                 ? "the helper exited with code " + std::to_string(WEXITSTATUS(status))
                 : "the helper was killed by signal " + std::to_string(WTERMSIG(status));
      if (WIFEXITED(status) && WEXITSTATUS(status) == exit_code::noperm)
        what += " (it must run as root)";
    }
  }
  fail(ECONNRESET, what);
}

// The descriptor may be non-blocking (an event loop watches a duplicate of it for the
// helper's end): wait for it, as a blocking call would.
bool client::ready(short events) const {
  pollfd p{fd_.get(), events, 0};
  int n;
  while ((n = ::poll(&p, 1, reply_seconds * 1000)) < 0 && errno == EINTR) {
  }
  return n > 0;
}

reply client::call(const request& r, int fd_out, net::unique_fd* fd_in) {
  if (!fd_) fail(ENOTCONN, "not connected");
  auto out = encode(r);
  std::string broken;
  std::size_t at = 0;
  while (at < out.size()) {
    const auto fds =
        fd_out >= 0 && at == 0 ? std::span<const int>(&fd_out, 1) : std::span<const int>();
    auto n = net::send_with_fds(fd_.get(), std::span(out).subspan(at), fds);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN && ready(POLLOUT)) continue;
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      // It may have closed after saying why (a frame over its limit): read that first.
      broken = std::strerror(errno);
      break;
    }
    if (n < 0) fail(errno == EAGAIN ? ETIMEDOUT : errno, "sending");
    at += static_cast<std::size_t>(n);
  }

  std::vector<uint8_t> in(4);
  std::size_t need = 4;
  bool have_length = false;
  at = 0;
  while (at < need) {
    std::vector<net::unique_fd> fds;
    auto n = net::recv_with_fds(fd_.get(), std::span(in).subspan(at, need - at), fds);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN && ready(POLLIN)) continue;
    if (n < 0 && errno == EAGAIN)
      fail(ETIMEDOUT, "no answer in " + std::to_string(reply_seconds) + " s");
    if (n < 0 && errno == ECONNRESET) gone(broken.empty() ? std::strerror(errno) : broken);
    if (n < 0) fail(errno, "reading the answer");
    for (auto& fd : fds)
      if (fd_in && !*fd_in) *fd_in = std::move(fd);  // the rest close as `fds` goes
    if (n == 0) gone(broken.empty() ? "it closed the connection" : broken);
    at += static_cast<std::size_t>(n);
    if (at == need && !have_length) {
      uint32_t len = 0;
      try {
        len = frame_length(std::span<const uint8_t, 4>(in.data(), 4));
      } catch (const bad_message& e) {
        fail(EPROTO, e.what());
      }
      have_length = true;
      need = 4 + len;
      in.resize(need);
    }
  }
  reply rep;
  try {
    rep = decode_reply(std::span<const uint8_t>(in).subspan(4));
  } catch (const bad_message& e) {
    fail(EPROTO, e.what());
  }
  if (auto* e = std::get_if<error>(&rep))
    throw std::system_error(e->code, std::generic_category(), e->message);
  if (!broken.empty()) gone(broken);
  return rep;
}

void client::hello() {
  net::unique_fd ns(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!ns) fail(errno, "/proc/self/ns/net");
  call(helper::hello{}, ns.get());
}

void client::install(const nft::ruleset& r) { call(helper::install{r}); }

void client::learn(const std::string& profile, const net::address& a, std::chrono::seconds ttl,
                   std::optional<net::address> forget) {
  auto secs = std::clamp<int64_t>(ttl.count(), 0, limits::ttl);
  call(helper::learn{profile, a, static_cast<uint32_t>(secs), forget});
}

void client::remove() { call(helper::remove{}); }

std::map<std::string, uint64_t> client::refused() {
  auto rep = call(helper::refused{});
  auto* c = std::get_if<counts>(&rep);
  if (!c) fail(EPROTO, "the helper answered refused without counts");
  return c->packets;
}

net::unique_fd client::lifeline() {
  net::unique_fd got;
  call(helper::lifeline{}, -1, &got);
  if (!got) fail(EPROTO, "the helper's answer came without the lifeline");
  return got;
}

net::unique_fd client::marked_socket(int family, int type) {
  if ((family != AF_INET && family != AF_INET6) || (type != SOCK_STREAM && type != SOCK_DGRAM))
    fail(EINVAL, "marked_socket: AF_INET or AF_INET6, SOCK_STREAM or SOCK_DGRAM");
  net::unique_fd got;
  call(helper::socket{static_cast<uint8_t>(family == AF_INET ? 4 : 6),
                      type == SOCK_DGRAM ? socket_kind::udp : socket_kind::tcp},
       -1, &got);
  if (!got) fail(EPROTO, "the helper's answer came without the socket");
  return got;
}

}  // namespace tprosshy::helper
