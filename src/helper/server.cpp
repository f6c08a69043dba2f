#include "helper/server.hpp"

#include <fcntl.h>
#include <grp.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <system_error>
#include <vector>

#include "helper/confine.hpp"
#include "helper/protocol.hpp"
#include "helper/sock_diag.hpp"
#include "net/exit_codes.hpp"
#include "net/fd.hpp"
#include "net/fd_passing.hpp"
#include "nft/netlink.hpp"

namespace tprosshy::helper {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using local = asio::local::stream_protocol;

namespace {

namespace ex = exit_code;

struct holder {
  uint32_t uid;
  pid_t pid;
};

// What all connections share (one thread: no locks).
struct state {
  std::size_t connections = 0;
  std::map<uint32_t, std::size_t> by_uid;  // live connections of each uid
  std::map<std::string, holder> tables;    // table name -> the live connection holding it
  struct stat netns {};                    // the helper's own network namespace
};

std::string ns_error(int fd, const state& s) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return std::string("cannot stat it: ") + std::strerror(errno);
  if (st.st_dev != s.netns.st_dev || st.st_ino != s.netns.st_ino)
    return "the caller is in another network namespace";
  return "";
}

class connection : public std::enable_shared_from_this<connection> {
 public:
  connection(local::socket s, state& st)
      : sock_(std::move(s)), deadline_(sock_.get_executor()), st_(st) {
    ucred c{};
    socklen_t len = sizeof c;
    if (::getsockopt(sock_.native_handle(), SOL_SOCKET, SO_PEERCRED, &c, &len) == 0) {
      who_ = {c.uid, c.gid};
      pid_ = c.pid;
    } else {
      who_ = {~0u, ~0u};  // unknown: confined as nobody in particular, refused ports
    }
    ++st_.connections;
    ++st_.by_uid[who_.uid];
  }
  ~connection() {
    nl_.reset();  // the kernel drops the table with the netlink socket
    release();
    --st_.connections;
    if (--st_.by_uid[who_.uid] == 0) st_.by_uid.erase(who_.uid);
  }

  static asio::awaitable<void> run(std::shared_ptr<connection> self) {
    self->arm(limits::hello_time);
    spdlog::debug("helper: uid {} pid {}: connected", self->who_.uid, self->pid_);
    try {
      while (co_await self->serve_one()) {
      }
    } catch (const std::exception& e) {
      self->log_error(e.what());
    }
    self->deadline_.cancel();
    if (!self->table_.empty() && self->lifeline_) co_await self->outlive();
    if (!self->table_.empty())
      spdlog::info("helper: uid {} pid {}: connection closed, table inet {} removed",
                   self->who_.uid, self->pid_, self->table_);
    boost::system::error_code ignored;
    self->sock_.close(ignored);
  }

 private:
  // The caller is gone, maybe killed: its ssh children (holding the lifeline) are ending
  // their flows with resets now, which reach the clients only through the table's NAT.
  asio::awaitable<void> outlive() {
    using namespace asio::experimental::awaitable_operators;
    const auto started = std::chrono::steady_clock::now();
    asio::posix::stream_descriptor rest(sock_.get_executor(), lifeline_.release());
    asio::steady_timer limit(sock_.get_executor(), limits::lifeline_time);
    auto r = co_await (
        rest.async_wait(asio::posix::descriptor_base::wait_read, as_tuple(use_awaitable)) ||
        limit.async_wait(as_tuple(use_awaitable)));
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    if (r.index() == 1)
      log_error("its processes still hold the lifeline after " +
                std::to_string(limits::lifeline_time.count()) + " s: removing the table anyway");
    else if (took > std::chrono::milliseconds(50))
      spdlog::info("helper: uid {} pid {}: kept table inet {} {} ms for its ssh to end its flows",
                   who_.uid, pid_, table_, took.count());
  }

  void log_error(const std::string& what) {
    spdlog::warn("helper: uid {} pid {}: {}", who_.uid, pid_, what);
  }

  // Closes the connection unless disarmed in time (a silent caller cannot hold a slot).
  void arm(std::chrono::seconds t) {
    deadline_.expires_after(t);
    deadline_.async_wait([w = weak_from_this()](boost::system::error_code ec) {
      if (ec) return;
      if (auto c = w.lock()) {
        c->log_error("too slow: closing");
        boost::system::error_code ignored;
        c->sock_.close(ignored);
      }
    });
  }

  void release() {
    if (auto it = st_.tables.find(table_); !table_.empty() && it != st_.tables.end())
      st_.tables.erase(it);
    table_.clear();
  }

  // Reads until `need` bytes are buffered, taking any descriptors that come along.
  asio::awaitable<bool> fill(std::size_t need) {
    while (buf_.size() < need) {
      auto [ec] = co_await sock_.async_wait(local::socket::wait_read, as_tuple(use_awaitable));
      if (ec) co_return false;
      // Never more than this frame needs: memory follows what the caller has sent.
      std::size_t want = std::min<std::size_t>(need - buf_.size(), 64 * 1024);
      std::size_t at = buf_.size();
      buf_.resize(at + want);
      auto n =
          net::recv_with_fds(sock_.native_handle(), std::span<std::uint8_t>(buf_.data() + at, want),
                             fds_, MSG_DONTWAIT);
      buf_.resize(at + std::max<ssize_t>(n, 0));
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n <= 0) co_return false;
    }
    co_return true;
  }

  asio::awaitable<void> send(const reply& r, int fd = -1) {
    auto bytes = encode(r);
    std::size_t at = 0;
    while (at < bytes.size()) {
      const auto fds = fd >= 0 && at == 0 ? std::span<const int>(&fd, 1) : std::span<const int>();
      auto n = net::send_with_fds(sock_.native_handle(), std::span(bytes).subspan(at), fds,
                                  MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        auto [ec] = co_await sock_.async_wait(local::socket::wait_write, as_tuple(use_awaitable));
        if (ec) co_return;
        continue;
      }
      if (n < 0) co_return;  // gone: the read side sees it next
      at += static_cast<std::size_t>(n);
    }
  }

  asio::awaitable<void> refuse(int code, std::string message) {
    log_error(message);
    if (message.size() > limits::message) message.resize(limits::message);
    // A named reply: GCC 12 miscompiles braced temporaries inside co_await arguments.
    const reply r = error{code, std::move(message)};
    co_await send(r);
  }

  // One request and its reply; false when the connection is to close.
  asio::awaitable<bool> serve_one() {
    buf_.clear();
    if (!co_await fill(4)) co_return false;
    uint32_t len = 0;
    std::string bad;
    try {
      len = frame_length(std::span<const uint8_t, 4>(buf_.data(), 4));
    } catch (const bad_message& e) {
      bad = e.what();
    }
    if (!bad.empty()) {
      co_await refuse(EPROTO, bad);
      co_return false;
    }
    if (greeted_) arm(limits::frame_time);
    bool whole = co_await fill(4 + std::size_t(len));
    if (greeted_) deadline_.cancel();
    if (!whole) co_return false;
    request req;
    try {
      req = decode_request(std::span<const uint8_t>(buf_).subspan(4));
    } catch (const bad_message& e) {
      bad = e.what();
    }
    if (!bad.empty()) {
      co_await refuse(EINVAL, bad);
      co_return false;
    }
    auto fds = std::move(fds_);
    fds_.clear();
    if (!greeted_) {
      auto* h = std::get_if<hello>(&req);
      if (!h) {
        co_await refuse(EPROTO, "the first message must be hello");
        co_return false;
      }
      if (h->version != version) {
        co_await refuse(EPROTO, "protocol version " + std::to_string(h->version) +
                                    ", this helper speaks " + std::to_string(version));
        co_return false;
      }
      if (fds.size() != 1) {
        co_await refuse(EPROTO, "hello must carry the caller's /proc/self/ns/net (" +
                                    std::to_string(fds.size()) + " descriptors came)");
        co_return false;
      }
      if (auto why = ns_error(fds[0].get(), st_); !why.empty()) {
        co_await refuse(EXDEV, why);
        co_return false;
      }
      greeted_ = true;
      deadline_.cancel();
      const reply done = ok{};
      co_await send(done);
      co_return true;
    }
    net::unique_fd handed;
    int code = 0;
    reply done = ok{};
    try {
      if (std::holds_alternative<refused>(req))
        done = counts{nl_ && installed_ ? nl_->refused() : std::map<std::string, uint64_t>{}};
      else
        handed = handle(req);
    } catch (const std::system_error& e) {
      code = e.code().value();
      bad = e.what();
      // The client adds the errno's text itself.
      if (auto tail = ": " + e.code().message(); bad.ends_with(tail))
        bad.resize(bad.size() - tail.size());
    } catch (const std::exception& e) {
      code = EIO;
      bad = e.what();
    }
    if (!bad.empty()) {
      co_await refuse(code, bad);
      co_return true;
    }
    co_await send(done, handed.get());
    co_return true;  // `handed`, our copy, closes here
  }

  [[noreturn]] static void fail(int code, const std::string& why) {
    throw std::system_error(code, std::generic_category(), why);
  }

  net::unique_fd handle(const request& req) {
    if (std::holds_alternative<hello>(req)) fail(EPROTO, "hello: already greeted");
    if (auto* i = std::get_if<install>(&req)) {
      auto r = confine(i->rules, who_, owned_on_loopback);
      if (auto it = st_.tables.find(r.table); it != st_.tables.end() && r.table != table_)
        fail(EBUSY, "table inet " + r.table + " is held by another tprosshy of uid " +
                        std::to_string(it->second.uid) + " (pid " + std::to_string(it->second.pid) +
                        ")");
      if (!nl_) nl_.emplace();
      nl_->install(r);
      const bool first = !installed_;  // a reload's replacement is not news
      release();
      table_ = r.table;
      st_.tables[table_] = {who_.uid, pid_};
      installed_ = true;
      learning_.clear();
      for (const auto& p : r.profiles)
        if (p.learned) learning_.insert(p.name);
      learned_.clear();
      spdlog::log(first ? spdlog::level::info : spdlog::level::debug,
                  "helper: uid {} pid {}: installed table inet {} ({} profiles)", who_.uid, pid_,
                  table_, r.profiles.size());
      return {};
    }
    if (auto* l = std::get_if<learn>(&req)) {
      if (!installed_ || !learning_.contains(l->profile))
        fail(ENOENT,
             "learn: profile '" + l->profile + "' has no learned sets in the ruleset installed");
      // A user's learns must not grow the kernel's sets without bound: count those alive.
      auto key = std::pair(l->profile, l->address);
      auto now = std::chrono::steady_clock::now();
      if (who_.uid != 0 && !learned_.contains(key) && learned_.size() >= limits::live_learned)
        std::erase_if(learned_, [&](const auto& e) { return e.second <= now; });
      if (who_.uid != 0 && !learned_.contains(key) && learned_.size() >= limits::live_learned)
        fail(ENOSPC, "learn: " + std::to_string(learned_.size()) +
                         " learned addresses alive, limit " + std::to_string(limits::live_learned));
      nl_->learn(l->profile, l->address, std::chrono::seconds(l->ttl), l->forget);
      if (who_.uid != 0) learned_[key] = now + std::chrono::seconds(std::max<uint32_t>(l->ttl, 1));
      if (who_.uid != 0 && l->forget) learned_.erase(std::pair(l->profile, *l->forget));
      return {};
    }
    if (std::holds_alternative<remove>(req)) {
      if (nl_) nl_->remove();
      if (!table_.empty())
        spdlog::info("helper: uid {} pid {}: removed table inet {}", who_.uid, pid_, table_);
      release();
      installed_ = false;
      learning_.clear();
      learned_.clear();
      return {};
    }
    if (std::holds_alternative<lifeline>(req)) {
      if (lifeline_) fail(EEXIST, "lifeline: this connection has one already");
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) fail(errno, "pipe");
      lifeline_.reset(p[0]);
      return net::unique_fd(p[1]);
    }
    const auto& s = std::get<socket>(req);
    net::unique_fd fd(
        ::socket(s.family == 4 ? AF_INET : AF_INET6,
                 (s.kind == socket_kind::udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0));
    if (!fd) fail(errno, "socket");
    uint32_t mark = mark_for(who_);
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0)
      fail(errno, "setting SO_MARK");
    return fd;
  }

  local::socket sock_;
  asio::steady_timer deadline_;
  state& st_;
  caller who_;
  pid_t pid_ = 0;
  bool greeted_ = false;
  std::vector<uint8_t> buf_;
  std::vector<net::unique_fd> fds_;
  std::optional<nft::netlink> nl_;
  net::unique_fd lifeline_;  // the read end
  std::string table_;
  bool installed_ = false;
  std::set<std::string> learning_;  // the installed ruleset's profiles with learned sets
  std::map<std::pair<std::string, net::address>, std::chrono::steady_clock::time_point> learned_;
};

void start(asio::any_io_executor ex, local::socket s, state& st) {
  asio::co_spawn(ex, connection::run(std::make_shared<connection>(std::move(s), st)),
                 asio::detached);
}

asio::awaitable<void> accept_loop(local::acceptor& acceptor, state& st) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer pause(ex);
  for (;;) {
    auto [ec, s] = co_await acceptor.async_accept(as_tuple(use_awaitable));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {  // out of descriptors: back off instead of spinning
      spdlog::warn("helper: accept: {}", ec.message());
      pause.expires_after(std::chrono::milliseconds(100));
      co_await pause.async_wait(as_tuple(use_awaitable));
      continue;
    }
    ucred c{};
    socklen_t len = sizeof c;
    ::getsockopt(s.native_handle(), SOL_SOCKET, SO_PEERCRED, &c, &len);
    std::string busy;
    auto held = st.by_uid.find(c.uid);
    if (st.connections >= limits::connections)
      busy = "the helper serves " + std::to_string(limits::connections) + " connections already";
    else if (c.uid != 0 && held != st.by_uid.end() && held->second >= limits::user_connections)
      busy = "uid " + std::to_string(c.uid) + " has " + std::to_string(limits::user_connections) +
             " connections to the helper already";
    if (!busy.empty()) {
      spdlog::warn("helper: uid {} pid {}: {}", c.uid, c.pid, busy);
      auto frame = encode(error{EAGAIN, busy});
      (void)::send(s.native_handle(), frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      continue;
    }
    start(ex, std::move(s), st);
  }
}

[[noreturn]] void fail(int err, const std::filesystem::path& path, const std::string& why) {
  throw std::system_error(err, std::generic_category(), path.string() + ": " + why);
}

// A fresh listening socket at `path`: a stale one (nobody answers) is replaced, a live one
// or anything else there is left alone.
net::unique_fd listen_at(const std::filesystem::path& path, const std::string& group_name) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.native().size() >= sizeof a.sun_path) fail(ENAMETOOLONG, path, "too long");
  std::memcpy(a.sun_path, path.c_str(), path.native().size());
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) fail(EEXIST, path, "exists and is not a socket");
    net::unique_fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0)
      fail(EADDRINUSE, path, "another helper answers there");
    if (::unlink(path.c_str()) != 0) fail(errno, path, "cannot remove the stale socket");
  }
  net::unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) fail(errno, path, "socket");
  auto old = ::umask(0177);  // born 0600: nobody connects before the mode below is set
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  int err = errno;
  ::umask(old);
  if (rc != 0) fail(err, path, "bind");
  // The group (tprosshy), if the system has one, holds the users who may install rules.
  if (const group* g = ::getgrnam(group_name.c_str())) {
    if (::chown(path.c_str(), 0, g->gr_gid) != 0 || ::chmod(path.c_str(), 0660) != 0)
      fail(errno, path, "setting its owner and mode");
  }
  if (::listen(fd.get(), 16) != 0) fail(errno, path, "listen");
  return fd;
}

void setup_logging() {
  if (!spdlog::get("helper")) {
    spdlog::set_default_logger(spdlog::stderr_color_mt("helper"));
    spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %v");
    spdlog::flush_on(spdlog::level::trace);
  }
}

bool is_unix_stream(int fd) {
  int domain = 0, type = 0;
  socklen_t len = sizeof domain;
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) return false;
  len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return false;
  sockaddr_un peer{};
  socklen_t plen = sizeof peer;
  return domain == AF_UNIX && type == SOCK_STREAM &&
         ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) == 0;
}

}  // namespace

int serve(const options& o) {
  setup_logging();
  if (::geteuid() != 0) {
    std::cerr << "tprosshy helper: must run as root (it installs nftables rules for its callers)\n";
    return ex::noperm;
  }
  ::signal(SIGPIPE, SIG_IGN);
  state st;
  if (::stat("/proc/self/ns/net", &st.netns) != 0) {
    std::cerr << "tprosshy helper: /proc/self/ns/net: " << std::strerror(errno) << "\n";
    return ex::oserr;
  }
  asio::io_context io(1);
  if (o.stdio) {
    if (!is_unix_stream(0)) {
      std::cerr << "tprosshy helper: --stdio needs a connected Unix stream socket on fd 0\n";
      return ex::usage;
    }
    // The daemon that spawned us decides when its rules go: by closing the connection.
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::signal(sig, SIG_IGN);
    start(io.get_executor(), local::socket(io, local(), 0), st);
    io.run();
    return 0;
  }
  net::unique_fd listener;
  std::filesystem::path path = o.socket;
  const char* pid = std::getenv("LISTEN_PID");
  const char* fds = std::getenv("LISTEN_FDS");
  if (path.empty() && pid && fds && std::atol(pid) == ::getpid() && std::string(fds) == "1") {
    listener.reset(3);  // systemd's socket unit made it (and its mode)
  } else {
    if (path.empty()) path = default_socket;
    try {
      listener = listen_at(path, o.group);
    } catch (const std::system_error& e) {
      std::cerr << "tprosshy helper: " << e.what() << "\n";
      return ex::oserr;
    }
  }
  struct stat made {};  // to remove the socket file at the end only if it is still ours
  if (!path.empty()) ::lstat(path.c_str(), &made);
  local::acceptor acceptor(io, local(), listener.release());
  asio::signal_set signals(io, SIGINT, SIGTERM);
  sigset_t stop;
  sigemptyset(&stop);
  for (int sig : {SIGINT, SIGTERM}) sigaddset(&stop, sig);
  ::sigprocmask(SIG_UNBLOCK, &stop, nullptr);  // main() blocks them until a signal_set exists
  signals.async_wait([&](boost::system::error_code ec, int sig) {
    if (ec) return;
    spdlog::info("helper: signal {}: stopping", sig);
    io.stop();
  });
  spdlog::info("helper: serving {}", path.empty() ? "the socket systemd passed" : path.string());
  asio::co_spawn(io, accept_loop(acceptor, st), asio::detached);
  io.run();
  struct stat now {};
  if (!path.empty() && ::lstat(path.c_str(), &now) == 0 && now.st_ino == made.st_ino &&
      now.st_dev == made.st_dev)
    ::unlink(path.c_str());
  return 0;
}

}  // namespace tprosshy::helper
