#include "tunnel/tunnel.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <random>

#include "tunnel/process.hpp"

namespace tprosshy::tunnel {

namespace asio = boost::asio;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

struct tunnel::impl {
  asio::any_io_executor ex;
  options opt;
  observer on_change;
  state st = state::starting;
  uint16_t port = 0;
  std::string last_error;
  bool stopping = false;
  bp::process* proc = nullptr;
  asio::steady_timer backoff{ex};

  void set(state s, const std::string& why = {}) {
    st = s;
    if (on_change) on_change(s, why);
  }

  static uint16_t free_port(asio::any_io_executor ex) {
    tcp::acceptor a(ex, tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0));
    return a.local_endpoint().port();
  }

  asio::awaitable<void> pump_stderr(asio::readable_pipe& err) {
    std::string buf;
    for (;;) {
      auto [ec, n] = co_await asio::async_read_until(err, asio::dynamic_buffer(buf), '\n',
                                                     asio::as_tuple(use_awaitable));
      if (ec) {
        if (!buf.empty()) note(buf);
        co_return;
      }
      note(buf.substr(0, n - 1));
      buf.erase(0, n);
    }
  }

  void note(std::string line) {
    while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
    if (line.starts_with("ssh: ")) line.erase(0, 5);
    if (line.empty()) return;
    spdlog::warn("[{}] ssh: {}", opt.profile, line);
    last_error = std::move(line);
  }

  // Polls the SOCKS port until it answers: ssh opens -D only after authentication, so
  // an answer means the tunnel is usable. Short steps (a refused local connect costs
  // microseconds) keep "ready" within a few milliseconds of the login.
  asio::awaitable<bool> wait_ready() {
    auto deadline = std::chrono::steady_clock::now() + opt.ready_timeout;
    asio::steady_timer t(ex);
    auto step = 5ms;
    while (std::chrono::steady_clock::now() < deadline) {
      if (co_await socks_answers(tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), port)))
        co_return true;
      t.expires_after(step);
      co_await t.async_wait(use_awaitable);
      step = std::min<std::chrono::milliseconds>(step * 2, 20ms);
    }
    co_return false;
  }

  // One ssh process from spawn to exit. Returns whether it ever became ready.
  asio::awaitable<bool> attempt(const std::string& ssh) {
    port = free_port(ex);
    auto args = tunnel_command(opt.ssh_args, opt.destination, port);
    asio::readable_pipe err(ex);
    bp::error_code ec;
    bp::process p(ex, ssh, args, bp::process_stdio{nullptr, nullptr, err}, child_setup{});
    proc = &p;
    spdlog::debug("[{}] started ssh (pid {}) with SOCKS on 127.0.0.1:{}", opt.profile, p.id(),
                  port);
    bool was_ready = false;
    auto life = [&]() -> asio::awaitable<int> {
      auto r = co_await (wait_ready() || p.async_wait(asio::as_tuple(use_awaitable)));
      if (r.index() == 1) co_return std::get<0>(std::get<1>(r)) ? -1 : std::get<1>(std::get<1>(r));
      if (!std::get<0>(r)) {
        last_error = "no SOCKS answer from ssh within " +
                     std::to_string(opt.ready_timeout.count() / 1000) + " s";
        p.request_exit(ec);
      } else {
        was_ready = true;
        if (!stopping) set(state::up);
      }
      auto [wec, code] = co_await p.async_wait(asio::as_tuple(use_awaitable));
      co_return wec ? -1 : code;
    };
    int rc = co_await (life() && pump_stderr(err));
    proc = nullptr;
    if (!stopping)
      spdlog::log(was_ready ? spdlog::level::warn : spdlog::level::debug,
                  "[{}] ssh exited with code {}{}", opt.profile, rc,
                  last_error.empty() ? "" : ": " + last_error);
    co_return was_ready;
  }
};

tunnel::tunnel(asio::any_io_executor ex, options o, observer on_change)
    : impl_(std::make_shared<impl>(ex, std::move(o), std::move(on_change))) {}

tunnel::~tunnel() { stop(); }

asio::awaitable<void> tunnel::run() {
  auto self = impl_;
  auto ssh = find_ssh();
  if (ssh.empty()) {
    self->last_error = "ssh is not installed (no 'ssh' in PATH)";
    self->set(state::down, self->last_error);
    co_return;
  }
  std::mt19937 rng(std::random_device{}());
  auto delay = self->opt.backoff_min;
  while (!self->stopping) {
    self->last_error.clear();
    auto started = std::chrono::steady_clock::now();
    bool was_up = co_await self->attempt(ssh);
    if (self->stopping) break;
    if (was_up && std::chrono::steady_clock::now() - started > 30s) delay = self->opt.backoff_min;
    // Jitter keeps many tunnels to one flapping host from retrying in lockstep.
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    auto wait = std::chrono::milliseconds(static_cast<long>(delay.count() * jitter(rng)));
    self->set(state::down, self->last_error);
    spdlog::info("[{}] restarting ssh in {:.1f} s", self->opt.profile, wait.count() / 1000.0);
    self->backoff.expires_after(wait);
    co_await self->backoff.async_wait(asio::as_tuple(use_awaitable));
    delay = std::min(delay * 2, self->opt.backoff_max);
    if (!self->stopping) self->set(state::starting);
  }
  self->set(state::stopped);
}

void tunnel::stop() {
  if (!impl_ || impl_->stopping) return;
  impl_->stopping = true;
  impl_->backoff.cancel();
  bp::error_code ec;
  if (impl_->proc) impl_->proc->request_exit(ec);
}

state tunnel::current() const { return impl_->st; }
tcp::endpoint tunnel::socks() const {
  return tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), impl_->port);
}
const options& tunnel::config() const { return impl_->opt; }
std::string tunnel::last_error() const { return impl_->last_error; }

}  // namespace tprosshy::tunnel
