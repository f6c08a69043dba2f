#include "tunnel/tunnel.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <utility>

#include "net/prefix.hpp"
#include "net/tcp_info.hpp"
#include "tunnel/gate.hpp"
#include "tunnel/process.hpp"
#include "tunnel/ssh.hpp"

namespace tprosshy::tunnel {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using boost::system::error_code;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

namespace {

asio::awaitable<void> sleep_for(std::chrono::steady_clock::duration d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(as_tuple(use_awaitable));
}

std::string seconds(std::chrono::milliseconds d) { return std::to_string(d.count() / 1000) + " s"; }

// With SO_LINGER {1, 0} the socket's last close sends a reset instead of a FIN, whoever
// closes it (ssh, the kernel for a dead process, or us).
void reset_on_close(int fd, bool on) {
  linger l{on ? 1 : 0, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

// Resets the connection now, even while other descriptors hold the socket (ssh's, or ours
// still in flight to a master that never took them): connect() to AF_UNSPEC disconnects a
// TCP socket, with a reset from any synchronized state.
void reset_now(int fd) {
  sockaddr sa{};
  sa.sa_family = AF_UNSPEC;
  ::connect(fd, &sa, sizeof sa);
}

// Who a flow comes from, for the per-source limit: its IPv4 address, or its IPv6 /64 (one
// host's privacy addresses come from one prefix).
net::u128 source_of(int fd) {
  tcp::endpoint ep;
  auto len = static_cast<socklen_t>(ep.capacity());
  if (::getpeername(fd, ep.data(), &len) != 0) return 0;
  ep.resize(len);
  auto a = ep.address();
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  if (a.is_v4()) return net::to_u128(a);
  return net::to_u128(a) >> 64 << 64 | 1;  // the /64, apart from any IPv4 key
}

// Reads until the end; what came before an error is kept.
asio::awaitable<std::string> read_all(asio::readable_pipe& p) {
  std::string out;
  char buf[4096];
  for (;;) {
    auto [ec, n] = co_await p.async_read_some(asio::buffer(buf), as_tuple(use_awaitable));
    out.append(buf, n);
    if (ec || out.size() > mux::max_packet) co_return out;
  }
}

std::string last_line(const std::string& text) {
  auto end = text.find_last_not_of("\r\n");
  if (end == std::string::npos) return {};
  auto start = text.rfind('\n', end);
  start = start == std::string::npos ? 0 : start + 1;
  return text.substr(start, end + 1 - start);
}

mux::bytes concat(mux::bytes a, const mux::bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

struct tunnel::impl : std::enable_shared_from_this<impl> {
  impl(asio::any_io_executor e, options o, observer f)
      : ex(std::move(e)),
        opt(std::move(o)),
        on_change(std::move(f)),
        backoff(ex),
        setups(ex, opt.max_setups),
        answered(ex, asio::steady_timer::time_point::max()),
        next_probe(ex) {}

  asio::any_io_executor ex;
  options opt;
  observer on_change;
  state st = state::starting;
  std::string last_error;
  bool stopping = false;
  bp::process* proc = nullptr;
  int child = 0;
  asio::steady_timer backoff;
  gate setups;
  std::size_t flows = 0;
  std::map<net::u128, std::size_t> opening;  // channel opens in progress, by source

  // The control connection held open while ssh runs. A channel's end looks the same
  // whether the master closed it in its loop (a normal end) or freed it on its way out
  // (after its loop, where it answers nothing more); an alive check sent after the end and
  // answered tells the two apart.
  std::optional<mux::socket> master;
  std::uint64_t generation = 0;  // one per master connection: checks never span two
  std::uint32_t checks_sent = 0, checks_answered = 0;
  bool check_in_flight = false, check_again = false;
  asio::steady_timer answered;  // cancelled at every answer and when `master` closes

  struct health health;
  asio::steady_timer next_probe;  // cancelled to probe now, and when `master` closes

  void set(state s, const std::string& why = {}) {
    st = s;
    if (on_change) on_change(s, why);
  }

  void note(std::string line) {
    while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
    if (line.starts_with("ssh: ")) line.erase(0, 5);
    if (line.empty()) return;
    spdlog::warn("[{}] ssh: {}", opt.profile, line);
    // A changed host key: ssh prints the key's fingerprint on a line of its own.
    if (line.starts_with("SHA256:")) fingerprint = line.substr(0, line.find_first_of(". "));
    if (line.starts_with("Host key verification failed") && !fingerprint.empty())
      line += " (the server's key is " + fingerprint + ")";
    last_error = std::move(line);
  }
  std::string fingerprint;  // of the last host key ssh complained about

  asio::awaitable<void> pump_stderr(asio::readable_pipe& err) {
    std::string buf;
    for (;;) {
      auto [ec, n] = co_await asio::async_read_until(err, asio::dynamic_buffer(buf), '\n',
                                                     as_tuple(use_awaitable));
      if (ec) {
        if (!buf.empty()) note(buf);
        co_return;
      }
      note(buf.substr(0, n - 1));
      buf.erase(0, n);
    }
  }

  // Polls the control socket until the master answers; ssh opens it only after logging in.
  // The answer must carry our own child's pid. Never throws (it races the process's exit).
  asio::awaitable<std::optional<mux::socket>> wait_ready(int pid) {
    const auto deadline = std::chrono::steady_clock::now() + opt.ready_timeout;
    auto step = 5ms;
    while (std::chrono::steady_clock::now() < deadline) {
      try {
        auto s = co_await mux::open(opt.control_path,
                                    concat(mux::encode_hello(), mux::encode_alive_check(0)), pid);
        co_await mux::expect_hello(s);
        const auto m = co_await mux::read(s);
        if (m.type == mux::alive && static_cast<int>(m.value) == pid) co_return std::move(s);
        last_error = "the control socket answered for pid " + std::to_string(m.value) +
                     ", not for ssh (pid " + std::to_string(pid) + ")";
        co_return std::nullopt;
      } catch (const boost::system::system_error&) {
        // not listening yet
      } catch (const std::exception& e) {
        last_error = e.what();
        co_return std::nullopt;
      }
      co_await sleep_for(step);
      step = std::min<std::chrono::milliseconds>(step * 2, 20ms);
    }
    last_error = "ssh's control socket did not answer within " + seconds(opt.ready_timeout);
    co_return std::nullopt;
  }

  void send_check() {
    check_in_flight = true;
    auto packet = std::make_shared<mux::bytes>(mux::encode_alive_check(++checks_sent));
    // A failed write shows up as the end of the connection in watch_master.
    asio::async_write(*master, asio::buffer(*packet), [packet](error_code, std::size_t) {});
  }

  asio::awaitable<void> watch_master() {
    for (;;) {
      try {
        const auto m = co_await mux::read(*master);
        if (m.type != mux::alive) continue;
        checks_answered = m.id;
        check_in_flight = false;
        if (check_again) {
          check_again = false;
          send_check();
        }
        answered.cancel();
      } catch (const std::exception&) {
        break;
      }
    }
    error_code ignored;
    master->close(ignored);
    master.reset();
    answered.cancel();
    next_probe.cancel();
    health.healthy = false;
    // The master is unusable; make sure the process goes too.
    if (proc) proc->request_exit(ignored);
  }

  // After a channel's end: true if the master answers an alive check sent now, so it
  // closed the channel as a normal end rather than on its way out.
  asio::awaitable<bool> ended_normally() {
    if (!master) co_return false;
    const auto gen = generation;
    const auto need = checks_sent + 1;
    if (check_in_flight)
      check_again = true;
    else
      send_check();
    asio::steady_timer limit(ex, 10s);
    while (master && generation == gen && checks_answered < need) {
      auto r = co_await (answered.async_wait(as_tuple(use_awaitable)) ||
                         limit.async_wait(as_tuple(use_awaitable)));
      if (r.index() == 1) co_return false;
    }
    co_return master&& generation == gen&& checks_answered >= need;
  }

  // Asks the master for a channel to `dst` relaying `fd`: the control socket on success,
  // else why. Never throws (it races a timer). Not a variant: `||` would flatten it.
  struct channel {
    std::optional<mux::socket> control;
    std::string why;
    bool answered = false;   // the master replied, opened or not
    bool timed_out = false;  // no reply within the set-up time
  };
  asio::awaitable<channel> open_channel(const tcp::endpoint& dst, int fd) {
    auto c = co_await open_channel(dst, fd, opt.setup_timeout);
    // ssh not answering a setup in time is a sign of a hung ssh or path: ask now.
    if (c.timed_out) next_probe.cancel();
    co_return c;
  }
  asio::awaitable<channel> open_channel(const tcp::endpoint& dst, int fd,
                                        std::chrono::milliseconds timeout, bool urgent = false) {
    auto attempt = [&]() -> asio::awaitable<channel> {
      try {
        std::optional<mux::socket> s;
        {
          // The slot covers only the wait for the master's accept (its hello): channels
          // being opened do not count against its accept queue.
          auto slot = co_await setups.enter(urgent);
          if (!master) co_return channel{{}, "the tunnel is down"};
          s.emplace(co_await mux::open(
              opt.control_path,
              concat(mux::encode_hello(),
                     mux::encode_stdio_fwd(1, dst.address().to_string(), dst.port())),
              child));
          const int fds[] = {fd, fd};  // ssh's stdin and stdout: it reads and writes the flow
          co_await mux::send_fds(*s, fds);
          co_await mux::expect_hello(*s);
        }
        const auto m = co_await mux::read(*s);
        if (m.type == mux::session_opened) co_return channel{std::move(s), {}, true};
        if (m.type == mux::failure || m.type == mux::permission_denied)
          co_return channel{{}, "ssh: " + m.text, true};
        co_return channel{{}, "unexpected reply from the ssh master"};
      } catch (const std::exception& e) {
        co_return channel{{}, e.what()};
      }
    };
    auto r = co_await (attempt() || sleep_for(timeout));
    if (r.index() == 1)
      co_return channel{
          {},
          "no answer from ssh within " +
              (timeout < 10s ? std::to_string(timeout.count()) + " ms" : seconds(timeout)),
          false,
          true};
    co_return std::move(std::get<0>(r));
  }

  // One probe: a channel through the master to opt.probe, closed at once. Empty: passed.
  asio::awaitable<std::string> probe_once() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      co_return std::string("socketpair: ") + std::strerror(errno);
    net::unique_fd ours(sv[0]), theirs(sv[1]);
    const auto started = std::chrono::steady_clock::now();
    auto c = co_await open_channel(opt.probe, theirs.get(), opt.probe_timeout, true);
    if (c.answered) {
      const auto took = std::chrono::steady_clock::now() - started;
      health.last_latency = std::chrono::duration_cast<std::chrono::microseconds>(took);
      health.probes.observe(std::chrono::duration<double>(took).count());
    }
    if (c.control || (c.answered && !opt.probe_must_open)) co_return std::string();
    co_return c.why.empty() ? "no channel" : c.why;
  }

  // Probes on a fixed cadence while this master runs: the first at once (the tunnel
  // serves only after it passes), then every interval. Two failures in a row: out of
  // service, and ssh is restarted.
  asio::awaitable<void> probe_loop() {
    const auto gen = generation;
    int failures = 0;
    while (master && generation == gen && !stopping) {
      const auto started = std::chrono::steady_clock::now();
      auto why = co_await probe_once();
      if (!master || generation != gen || stopping) co_return;
      if (why.empty()) {
        failures = 0;
        if (!health.healthy) {
          health.healthy = true;
          health.healthy_since = std::chrono::steady_clock::now();
          set(state::up);
        }
      } else {
        health.last_failure = why;
        spdlog::warn("[{}] probe {} failed ({} in a row): {}", opt.profile,
                     opt.probe.address().to_string() + ":" + std::to_string(opt.probe.port()),
                     ++failures, why);
        if (failures >= 2) {
          health.healthy = false;
          health.healthy_since.reset();
          last_error = "two probes failed: " + why;
          spdlog::warn("[{}] out of service: restarting ssh", opt.profile);
          kill();
          co_return;
        }
      }
      // A failure is checked again a timeout after the failed probe started (at once when it
      // timed out), not an interval later: out of service within interval + 2 x timeout.
      next_probe.expires_at(started + (failures ? opt.probe_timeout : opt.probe_interval));
      co_await next_probe.async_wait(as_tuple(use_awaitable));
    }
  }

  // SIGTERM, then SIGKILL after the grace time: a stopped ssh ignores the first.
  void kill() {
    if (!proc) return;
    error_code ignored;
    proc->request_exit(ignored);
    const int pid = child;
    asio::co_spawn(
        ex,
        [self = shared_from_this(), pid]() -> asio::awaitable<void> {
          co_await sleep_for(self->opt.stop_grace);
          error_code ignored;
          if (self->proc && self->child == pid) self->proc->terminate(ignored);
        },
        asio::detached);
  }

  // One ssh process from spawn to exit. Returns whether it ever became ready.
  asio::awaitable<bool> attempt(const std::string& ssh) {
    // A master killed outright leaves its socket behind, and ssh will not replace it.
    ::unlink(opt.control_path.c_str());
    fingerprint.clear();
    auto args = tunnel_command(opt.ssh_args, opt.destination, opt.control_path);
    asio::readable_pipe err(ex);
    std::optional<bp::process> started;
    try {
      // The lifeline as ssh's stdin, which a master with -N never reads: ssh closes every
      // other descriptor it inherits.
      if (opt.lifeline >= 0)
        started.emplace(
            launch(ex, ssh, args, bp::process_stdio{opt.lifeline, nullptr, err}, opt.as));
      else
        started.emplace(launch(ex, ssh, args, bp::process_stdio{nullptr, nullptr, err}, opt.as));
    } catch (const std::system_error& e) {
      last_error = "cannot start ssh" + (opt.as ? " as " + opt.as->name : "") + ": " + e.what();
      co_return false;
    }
    auto& p = *started;
    proc = &p;
    child = p.id();
    spdlog::debug("[{}] started ssh (pid {}) with control socket {}", opt.profile, child,
                  opt.control_path);
    bool was_ready = false;
    auto life = [&]() -> asio::awaitable<int> {
      auto r = co_await (wait_ready(child) || p.async_wait(as_tuple(use_awaitable)));
      if (r.index() == 1) {
        auto [ec, code] = std::get<1>(r);
        co_return ec ? -1 : code;
      }
      if (auto& s = std::get<0>(r)) {
        was_ready = true;
        master.emplace(std::move(*s));
        ++generation;
        checks_sent = checks_answered = 0;
        check_in_flight = check_again = false;
        auto exited = [&]() -> asio::awaitable<int> {
          auto [ec, code] = co_await p.async_wait(as_tuple(use_awaitable));
          co_return ec ? -1 : code;
        };
        co_return co_await (exited() && watch_master() && probe_loop());
      }
      error_code ignored;
      p.request_exit(ignored);
      auto [ec, code] = co_await p.async_wait(as_tuple(use_awaitable));
      co_return ec ? -1 : code;
    };
    const int rc = co_await (life() && pump_stderr(err));
    proc = nullptr;
    child = 0;
    ::unlink(opt.control_path.c_str());
    if (!stopping)
      spdlog::log(was_ready ? spdlog::level::warn : spdlog::level::debug,
                  "[{}] ssh exited with code {}{}", opt.profile, rc,
                  last_error.empty() ? "" : ": " + last_error);
    co_return was_ready;
  }
};

tunnel::tunnel(asio::any_io_executor ex, options o, observer on_change)
    : impl_(std::make_shared<impl>(std::move(ex), std::move(o), std::move(on_change))) {}

tunnel::~tunnel() { stop(); }

asio::awaitable<void> tunnel::run() {
  auto self = impl_;
  const auto ssh = find_ssh();
  if (ssh.empty()) {
    self->last_error = "ssh is not installed (no 'ssh' in PATH)";
    self->set(state::down, self->last_error);
    self->set(state::stopped);
    co_return;
  }
  std::mt19937 rng(std::random_device{}());
  auto delay = self->opt.backoff_min;
  while (!self->stopping) {
    self->last_error.clear();
    const auto started = std::chrono::steady_clock::now();
    const bool was_up = co_await self->attempt(ssh);
    if (self->stopping) break;
    if (was_up && std::chrono::steady_clock::now() - started > 30s) delay = self->opt.backoff_min;
    // Jitter keeps many tunnels to one flapping host from retrying in lockstep.
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    const auto wait = std::chrono::milliseconds(static_cast<long>(delay.count() * jitter(rng)));
    self->set(state::down, self->last_error);
    spdlog::info("[{}] restarting ssh in {:.1f} s", self->opt.profile, wait.count() / 1000.0);
    self->backoff.expires_after(wait);
    co_await self->backoff.async_wait(as_tuple(use_awaitable));
    delay = std::min(delay * 2, self->opt.backoff_max);
    if (!self->stopping) self->set(state::starting);
  }
  self->set(state::stopped);
}

void tunnel::stop() {
  if (!impl_ || impl_->stopping) return;
  impl_->stopping = true;
  impl_->backoff.cancel();
  impl_->next_probe.cancel();
  impl_->kill();
}

bool tunnel::up() const { return impl_->st == state::up && impl_->health.healthy; }
const health& tunnel::health() const { return impl_->health; }
void tunnel::probe_now() { impl_->next_probe.cancel(); }

void probe_histogram::observe(double seconds) {
  for (std::size_t i = 0; i < bounds.size(); ++i)
    if (seconds <= bounds[i]) ++buckets[i];
  ++count;
  sum += seconds;
}

state tunnel::current() const { return impl_->st; }
int tunnel::pid() const { return impl_->child; }
std::size_t tunnel::flows() const { return impl_->flows; }
const options& tunnel::config() const { return impl_->opt; }
std::string tunnel::last_error() const { return impl_->last_error; }

asio::awaitable<flow_result> tunnel::carry(net::unique_fd client, tcp::endpoint dst) {
  auto self = impl_;
  flow_result r;
  ++self->flows;
  struct uncount {
    std::size_t& n;
    ~uncount() { --n; }
  } counted{self->flows};
  // Reset by default: unless the flow ends normally, its last close is a reset.
  reset_on_close(client.get(), true);
  if (!up() || !self->master) {
    r.reset = true;
    r.why = "the tunnel is down";
    co_return r;
  }
  if (self->flows > self->opt.max_flows) {
    r.reset = true;
    r.why = "the tunnel carries " + std::to_string(self->opt.max_flows) +
            " flows, the most one ssh connection takes";
    co_return r;
  }
  const int one = 1;
  ::setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const auto from = source_of(client.get());
  if (const auto most = self->opt.max_setups_per_source; self->opening[from] >= most) {
    reset_now(client.get());
    r.reset = true;
    r.why = "its source has " + std::to_string(most) +
            " flows being opened on this tunnel, the most one source may";
    co_return r;
  }
  struct unopen {
    std::map<net::u128, std::size_t>& by;
    net::u128 key;
    ~unopen() {
      if (--by[key] == 0) by.erase(key);
    }
  } opening{self->opening, from};
  ++self->opening[from];
  auto opened = co_await self->open_channel(dst, client.get());
  if (!opened.control) {
    reset_now(client.get());
    r.reset = true;
    r.why = std::move(opened.why);
    co_return r;
  }
  r.opened = true;
  // ssh carries the flow now. The master closes the control connection when the channel
  // ends; nothing else comes on it.
  auto& control = *opened.control;
  char byte;
  for (;;) {
    auto [ec, n] =
        co_await control.async_read_some(asio::buffer(&byte, 1), as_tuple(use_awaitable));
    if (ec) break;
  }
  const bool normal = co_await self->ended_normally();
  const auto counts = net::tcp_bytes(client.get());
  r.up = counts.received;
  r.down = counts.sent;
  if (normal) {
    reset_on_close(client.get(), false);
  } else {
    reset_now(client.get());
    r.reset = true;
    r.why = "ssh went away while carrying it";
  }
  co_return r;
}

asio::awaitable<stream> tunnel::open(tcp::endpoint dst) {
  auto self = impl_;
  if (!up() || !self->master) throw std::runtime_error("the tunnel is down");
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    throw std::runtime_error(std::string("socketpair: ") + std::strerror(errno));
  asio::local::stream_protocol::socket ours(self->ex);
  ours.assign(asio::local::stream_protocol(), sv[0]);
  net::unique_fd theirs(sv[1]);
  auto opened = co_await self->open_channel(dst, theirs.get());
  theirs.reset();
  if (!opened.control) throw std::runtime_error(opened.why);
  co_return stream{std::move(ours), std::move(*opened.control)};
}

asio::awaitable<std::string> tunnel::exec(std::string command, std::chrono::milliseconds timeout) {
  auto self = impl_;
  struct outcome {
    bool ok = false;
    std::string text;
  };
  auto attempt = [&]() -> asio::awaitable<outcome> {
    try {
      if (!self->master) co_return outcome{false, "the tunnel is down"};
      net::unique_fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
      int out[2], err[2];
      if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe: out of descriptors");
      net::unique_fd out_w(out[1]);
      asio::readable_pipe out_r(self->ex, out[0]);
      if (::pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe: out of descriptors");
      net::unique_fd err_w(err[1]);
      asio::readable_pipe err_r(self->ex, err[0]);
      std::optional<mux::socket> s;
      {
        auto slot = co_await self->setups.enter();
        s.emplace(co_await mux::open(
            self->opt.control_path,
            concat(mux::encode_hello(), mux::encode_new_session(1, command)), self->child));
        const int fds[] = {devnull.get(), out_w.get(), err_w.get()};
        co_await mux::send_fds(*s, fds);
        devnull.reset();
        out_w.reset();
        err_w.reset();
        co_await mux::expect_hello(*s);
      }
      const auto m = co_await mux::read(*s);
      if (m.type != mux::session_opened) co_return outcome{false, "ssh: " + m.text};
      auto exit_code = [&]() -> asio::awaitable<int> {
        try {
          for (;;) {
            const auto m = co_await mux::read(*s);
            if (m.type == mux::exit_message) co_return static_cast<int>(m.value);
          }
        } catch (const std::exception&) {
          co_return -1;  // closed without an exit status
        }
      };
      auto [o, e, code] = co_await (read_all(out_r) && read_all(err_r) && exit_code());
      if (code != 0) {
        auto why = last_line(e);
        co_return outcome{false, "'" + command + "' failed (exit " + std::to_string(code) + ")" +
                                     (why.empty() ? "" : ": " + why)};
      }
      co_return outcome{true, std::move(o)};
    } catch (const std::exception& e) {
      co_return outcome{false, e.what()};
    }
  };
  auto r = co_await (attempt() || sleep_for(timeout));
  if (r.index() == 1)
    throw std::runtime_error("'" + command + "' gave no answer within " + seconds(timeout));
  auto& o = std::get<0>(r);
  if (!o.ok) throw std::runtime_error(o.text);
  co_return std::move(o.text);
}

}  // namespace tprosshy::tunnel
