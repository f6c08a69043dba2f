#include "control/server.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <set>
#include <system_error>

#include "control/render.hpp"
#include "net/fd.hpp"

namespace tprosshy::control {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using boost::system::error_code;
using local = asio::local::stream_protocol;
using namespace asio::experimental::awaitable_operators;

namespace {

[[noreturn]] void fail(int err, const std::filesystem::path& path, const std::string& why) {
  throw std::system_error(err, std::generic_category(),
                          "control socket " + path.string() + ": " + why);
}

// Creates each missing directory down to `dir` with mode 0700.
void make_dirs(const std::filesystem::path& dir, const std::filesystem::path& socket) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) return;
  if (errno != ENOENT) fail(errno, socket, "cannot use " + dir.string());
  if (dir.has_parent_path() && dir.parent_path() != dir) make_dirs(dir.parent_path(), socket);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    fail(errno, socket, "cannot create " + dir.string());
}

// Another user who may write to the directory could replace the socket under us.
void check_dir(const std::filesystem::path& dir, const std::filesystem::path& socket) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) fail(errno, socket, "cannot use " + dir.string());
  if (!S_ISDIR(st.st_mode)) fail(ENOTDIR, socket, dir.string() + " is not a directory");
  if (st.st_uid != ::geteuid() && st.st_uid != 0)
    fail(EPERM, socket, dir.string() + " is owned by uid " + std::to_string(st.st_uid));
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))
    fail(EPERM, socket, "other users may write to " + dir.string());
}

sockaddr_un address(const std::filesystem::path& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.c_str(), path.native().size());
  return a;
}

// Whether a server accepts connections at `path`; false when it refuses them (stale).
bool answers(const std::filesystem::path& path) {
  net::unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) fail(errno, path, "socket");
  const auto a = address(path);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0) return true;
  if (errno == EAGAIN || errno == EINPROGRESS) return true;  // its backlog is full: alive
  if (errno == ECONNREFUSED) return false;
  fail(errno, path, "cannot tell whether another tprosshy listens there");
}

// Leaves `path` free for a new socket, or throws why not.
void claim(const std::filesystem::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    fail(errno, path, "cannot use it");
  }
  if (S_ISLNK(st.st_mode)) fail(ELOOP, path, "is a symbolic link");
  if (st.st_uid != ::geteuid())
    fail(EPERM, path, "is owned by uid " + std::to_string(st.st_uid) + ", not by this user");
  if (!S_ISSOCK(st.st_mode)) fail(EEXIST, path, "exists and is not a socket");
  if (answers(path)) fail(EADDRINUSE, path, "another tprosshy answers there");
  spdlog::info("control socket {}: replacing a stale socket", path.string());
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) fail(errno, path, "cannot remove it");
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct server::impl : std::enable_shared_from_this<impl> {
  asio::any_io_executor ex;
  std::filesystem::path path;
  handlers h;
  server_limits limits;
  local::acceptor acceptor;
  dev_t dev = 0;
  ino_t ino = 0;
  std::size_t sessions = 0;
  std::set<local::socket*> open;  // to close at stop()

  impl(asio::any_io_executor e) : ex(e), acceptor(e) {}

  asio::awaitable<void> accept_loop() {
    auto self = shared_from_this();
    asio::steady_timer pause(ex);
    for (;;) {
      auto [ec, sock] = co_await acceptor.async_accept(as_tuple(use_awaitable));
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      if (ec) {
        // Out of fds: back off instead of spinning.
        spdlog::warn("control socket {}: accept: {}", path.string(), ec.message());
        pause.expires_after(std::chrono::milliseconds(100));
        co_await pause.async_wait(as_tuple(use_awaitable));
        continue;
      }
      asio::co_spawn(ex, session(self, std::move(sock)), asio::detached);
    }
  }

  static asio::awaitable<void> session(std::shared_ptr<impl> self, local::socket sock) {
    ++self->sessions;
    self->open.insert(&sock);
    struct leave {
      impl& i;
      local::socket* s;
      ~leave() {
        --i.sessions;
        i.open.erase(s);
      }
    } left{*self, &sock};
    asio::steady_timer timer(sock.get_executor());
    reply r;
    if (self->sessions > self->limits.sessions) {
      r = {reply_busy,
           "busy: " + std::to_string(self->limits.sessions) + " requests in progress; try again\n"};
    } else {
      std::string line;
      timer.expires_after(self->limits.request_time);
      // One byte more than a request with "\r\n" may have, to tell a long line.
      auto got = co_await (asio::async_read_until(sock, asio::dynamic_buffer(line, max_request + 2),
                                                  '\n', as_tuple(use_awaitable)) ||
                           timer.async_wait(as_tuple(use_awaitable)));
      if (got.index() == 1) co_return;  // said nothing in time
      auto [ec, n] = std::get<0>(got);
      if (ec == asio::error::not_found) {
        r = {reply_usage, "request longer than " + std::to_string(max_request) + " bytes\n"};
      } else if (ec && !(ec == asio::error::eof && !line.empty())) {
        co_return;  // gone, or a connect that only checked we are alive
      } else {
        line.resize(ec ? line.size() : n - 1);
        r = co_await self->answer(line);
      }
    }
    const auto wire = encode(r);
    timer.expires_after(self->limits.reply_time);
    co_await (asio::async_write(sock, asio::buffer(wire), as_tuple(use_awaitable)) ||
              timer.async_wait(as_tuple(use_awaitable)));
    error_code ignored;
    sock.shutdown(local::socket::shutdown_both, ignored);
    sock.close(ignored);
  }

  asio::awaitable<reply> answer(std::string line) {
    request req;
    try {
      req = parse_request(line);
    } catch (const bad_request& e) {
      co_return reply{reply_usage, std::string(e.what()) + "\n"};
    }
    try {
      switch (req.what) {
        case request::verb::status:
          co_return reply{reply_ok, render_text(h.status(), unix_now())};
        case request::verb::status_json:
          co_return reply{reply_ok, render_json(h.status())};
        case request::verb::reload:
          spdlog::info("control socket: reload {} asked for", req.config);
          co_return co_await h.reload(req.config);
      }
    } catch (const std::exception& e) {
      spdlog::error("control socket: {}: {}", line, e.what());
      co_return reply{reply_software, std::string(e.what()) + "\n"};
    }
    co_return reply{reply_software, "unhandled request\n"};
  }

  void remove_file() {
    struct stat st {};
    if (ino && ::lstat(path.c_str(), &st) == 0 && st.st_dev == dev && st.st_ino == ino)
      ::unlink(path.c_str());
    ino = 0;
  }
};

server::server(asio::any_io_executor ex, std::filesystem::path path, handlers h,
               server_limits limits)
    : impl_(std::make_shared<impl>(ex)) {
  impl_->path = path;
  if (path.native().size() >= sizeof(sockaddr_un::sun_path))
    fail(ENAMETOOLONG, path, "longer than a Unix socket path may be");
  if (!path.has_filename()) fail(EISDIR, path, "names no file");
  const auto dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  make_dirs(dir, path);
  check_dir(dir, path);
  claim(path);

  auto& acc = impl_->acceptor;
  acc.open();
  // bind() creates the file with 0777 & ~umask: exactly 0600 from the start.
  const auto old = ::umask(0177);
  error_code ec;
  acc.bind(local::endpoint(path.string()), ec);
  ::umask(old);
  if (ec) fail(ec.value(), path, "cannot bind");
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) fail(errno, path, "gone after bind");
  impl_->dev = st.st_dev;
  impl_->ino = st.st_ino;
  acc.listen(64, ec);
  if (ec) {
    impl_->remove_file();
    fail(ec.value(), path, "cannot listen");
  }
  impl_->h = std::move(h);
  impl_->limits = limits;
}

server::~server() { stop(); }

const std::filesystem::path& server::path() const { return impl_->path; }

void server::start() { asio::co_spawn(impl_->ex, impl_->accept_loop(), asio::detached); }

void server::stop() {
  error_code ignored;
  impl_->acceptor.close(ignored);
  for (auto* s : impl_->open) s->close(ignored);
  impl_->remove_file();
}

}  // namespace tprosshy::control
