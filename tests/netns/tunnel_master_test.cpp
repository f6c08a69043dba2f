// One tunnel against a real sshd in a namespace of its own (ssh_server.hpp): readiness by
// our own child's pid, flows handed over by descriptor, resets whenever a flow cannot be
// carried to its end, exact byte counts, and commands and streams through the master.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <cstdio>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <sstream>

#include "flows.hpp"
#include "ssh_server.hpp"
#include "tunnel/control_dir.hpp"
#include "tunnel/tunnel.hpp"

namespace tprosshy::testing {
namespace {

namespace tn_ = tprosshy::tunnel;
using tn_::tunnel;

const tcp::endpoint target{asio::ip::make_address("198.18.99.5"), 80};
const tcp::endpoint target6{asio::ip::make_address("fd00:99::5"), 80};
const tcp::endpoint half_closer{asio::ip::make_address("198.18.99.5"), 81};
const tcp::endpoint closed_port{asio::ip::make_address("198.18.99.5"), 9};

std::string sh(const std::string& cmd) {
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    while (auto n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    ::pclose(p);
  }
  return out;
}

class TunnelMaster : public ::testing::Test {
 public:
  static inline asio::io_context io;
  static inline std::thread thread;
  static inline std::unique_ptr<ssh_server> server;
  static inline std::unique_ptr<tn_::control_dir> dir;
  static inline std::shared_ptr<tunnel> t;
  static inline std::vector<std::unique_ptr<tcp::acceptor>> targets;
  static inline std::promise<std::string> half_closer_got;

  static void SetUpTestSuite() {
    if (std::getenv("TP_TEST_DEBUG")) spdlog::set_level(spdlog::level::debug);
    server = std::make_unique<ssh_server>();
    dir = std::make_unique<tn_::control_dir>();
    server->in_server([] {
      for (auto ep : {target, target6, half_closer}) {
        targets.push_back(std::make_unique<tcp::acceptor>(io, ep));
        targets.back()->listen();
      }
    });
    asio::co_spawn(io, serve(*targets[0], false), asio::detached);
    asio::co_spawn(io, serve(*targets[1], false), asio::detached);
    asio::co_spawn(io, serve(*targets[2], true), asio::detached);
    t = make("t1");
    thread = std::thread([] {
      auto guard = asio::make_work_guard(io);
      io.run();
    });
    ASSERT_TRUE(eventually([] { return t->up(); }, 20s)) << t->last_error();
  }

  static void TearDownTestSuite() {
    if (t) t->stop();
    eventually([] { return t->current() == tn_::state::stopped; }, 5s);
    io.stop();
    if (thread.joinable()) thread.join();
    t.reset();
    targets.clear();
    dir.reset();
    server.reset();
  }

  static std::shared_ptr<tunnel> make(const std::string& name,
                                      std::function<void(tn_::options&)> tweak = {}) {
    tn_::options o;
    o.profile = name;
    o.destination = server->destination();
    o.ssh_args = server->ssh_args();
    o.control_path = dir->socket(name);
    o.backoff_min = 100ms;
    o.setup_timeout = 3s;
    if (tweak) tweak(o);
    auto tn = std::make_shared<tunnel>(io.get_executor(), o);
    asio::co_spawn(io, tn->run(), asio::detached);
    return tn;
  }

  static awaitable<void> serve(tcp::acceptor& acc, bool half_close) {
    for (;;) {
      auto [ec, s] = co_await acc.async_accept(as_tuple(use_awaitable));
      if (ec) co_return;
      if (!half_close) {
        asio::co_spawn(io, target_session(std::move(s)), asio::detached);
        continue;
      }
      // Speaks first, ends its side, and goes on reading.
      asio::co_spawn(
          io,
          [s = std::move(s)]() mutable -> awaitable<void> {
            co_await asio::async_write(s, asio::buffer("hello", 5), as_tuple(use_awaitable));
            s.shutdown(tcp::socket::shutdown_send);
            std::string got;
            char buf[256];
            for (;;) {
              auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), as_tuple(use_awaitable));
              got.append(buf, n);
              if (ec) break;
            }
            half_closer_got.set_value(got);
          },
          asio::detached);
    }
  }

  // A connected pair on loopback: the test's end and the end a tunnel carries.
  struct pair {
    tcp::socket mine;
    net::unique_fd theirs;
  };
  static pair connected() {
    tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
    tcp::socket mine(io);
    mine.connect(a.local_endpoint());
    auto theirs = a.accept();
    return {std::move(mine), net::unique_fd(theirs.release())};
  }

  // Runs the client side of the flow protocol on `mine` while `tn` carries the other end.
  struct outcome {
    result client;
    tn_::flow_result flow;
  };
  static outcome carry(std::shared_ptr<tunnel> tn, tcp::endpoint dst, std::uint64_t down,
                       std::uint64_t up) {
    using namespace asio::experimental::awaitable_operators;
    auto p = std::make_shared<pair>(connected());
    auto f = asio::co_spawn(
        io,
        [tn, p, dst, down, up]() -> awaitable<outcome> {
          auto [flow, res] = co_await (tn->carry(std::move(p->theirs), dst) &&
                                       client_on(std::move(p->mine), down, up));
          co_return outcome{res, flow};
        },
        asio::use_future);
    if (f.wait_for(60s) != std::future_status::ready) {
      ADD_FAILURE() << "flow did not finish";
      return {};
    }
    return f.get();
  }

  // flows.hpp's client, on a socket that is already connected.
  static awaitable<result> client_on(tcp::socket s, std::uint64_t down, std::uint64_t up) {
    co_return co_await client_socket(std::move(s), down, up);
  }
};

TEST_F(TunnelMaster, UpMeansOurOwnChildAnswersOnAPrivateSocket) {
  ASSERT_GT(t->pid(), 0);
  std::ifstream comm("/proc/" + std::to_string(t->pid()) + "/comm");
  std::string name;
  comm >> name;
  EXPECT_EQ(name, "ssh");
  struct stat st {};
  ASSERT_EQ(::stat(dir->path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat(dir->socket("t1").c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  // No port of any kind: ssh listens on nothing but its control socket.
  const auto listening = sh("ss -Hltnp");
  EXPECT_EQ(listening.find("\"ssh\""), std::string::npos) << listening;
}

TEST_F(TunnelMaster, CarriesBothWaysAndCountsEveryByte) {
  constexpr std::uint64_t size = 16 << 20;
  const auto o = carry(t, target, size, size);
  expect_complete(o.client, size, size);
  EXPECT_TRUE(o.flow.opened);
  EXPECT_FALSE(o.flow.reset) << o.flow.why;
  EXPECT_EQ(o.flow.up, 8 + size);     // the count, then the upload
  EXPECT_EQ(o.flow.down, size + 16);  // the download, then the trailer
}

TEST_F(TunnelMaster, Ipv6Destination) {
  const auto o = carry(t, target6, 1 << 20, 1 << 20);
  expect_complete(o.client, 1 << 20, 1 << 20);
}

TEST_F(TunnelMaster, ClientHalfCloseStillGetsTheWholeReply) {
  // The target answers only after the client's EOF.
  const auto o = carry(t, target, 0, 1000);
  expect_complete(o.client, 0, 1000);
  EXPECT_EQ(o.flow.down, 16u);
}

TEST_F(TunnelMaster, RefusedDestinationResetsTheClient) {
  auto p = connected();
  auto f = asio::co_spawn(io, t->carry(std::move(p.theirs), closed_port), asio::use_future);
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  const auto r = f.get();
  EXPECT_FALSE(r.opened);
  EXPECT_TRUE(r.reset);
  EXPECT_NE(r.why.find("refused"), std::string::npos) << r.why;
  char b;
  boost::system::error_code ec;
  p.mine.read_some(asio::buffer(&b, 1), ec);
  EXPECT_EQ(ec, asio::error::connection_reset) << ec.message();
}

TEST_F(TunnelMaster, ServerHalfCloseDeliversEverythingThenEndsTheFlow) {
  // OpenSSH ends a stdio forward once the server has ended its side (`ssh -W` does the
  // same): the client gets every byte and the EOF; what it sends afterwards is refused.
  half_closer_got = {};
  auto got = half_closer_got.get_future();
  auto p = connected();
  auto f = asio::co_spawn(io, t->carry(std::move(p.theirs), half_closer), asio::use_future);
  std::string head(5, '\0');
  boost::system::error_code ec;
  asio::read(p.mine, asio::buffer(head), ec);
  EXPECT_EQ(head, "hello");
  char b;
  p.mine.read_some(asio::buffer(&b, 1), ec);
  EXPECT_EQ(ec, asio::error::eof);
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_FALSE(f.get().reset);
  ASSERT_EQ(got.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(got.get(), "");
}

TEST_F(TunnelMaster, StreamThroughTheMaster) {
  auto f = asio::co_spawn(
      io,
      [&]() -> awaitable<std::string> {
        auto s = co_await t->open(target);
        std::array<std::uint8_t, 8> hdr{};
        put64(hdr.data(), 100);
        co_await asio::async_write(s.data, asio::buffer(hdr), use_awaitable);
        s.data.shutdown(asio::socket_base::shutdown_send);
        std::string all;
        char buf[512];
        for (;;) {
          auto [ec, n] =
              co_await s.data.async_read_some(asio::buffer(buf), as_tuple(use_awaitable));
          all.append(buf, n);
          if (ec) break;
        }
        co_return all;
      },
      asio::use_future);
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get().size(), 100u + 16u);
}

TEST_F(TunnelMaster, ExecRunsACommandThroughTheMaster) {
  auto f = asio::co_spawn(io, t->exec("echo tprosshy; echo oops >&2", 20s), asio::use_future);
  ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(f.get(), "tprosshy\n");
  auto bad = asio::co_spawn(io, t->exec("echo why >&2; exit 3", 20s), asio::use_future);
  ASSERT_EQ(bad.wait_for(30s), std::future_status::ready);
  try {
    bad.get();
    ADD_FAILURE() << "a failing command must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("exit 3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("why"), std::string::npos) << e.what();
  }
}

// The flow's client reads the download slowly, so ssh is mid-flow when it goes.
void expect_reset_when(std::shared_ptr<tunnel> tn, int signal) {
  using namespace asio::experimental::awaitable_operators;
  const int old = tn->pid();
  ASSERT_GT(old, 0);
  auto p = std::make_shared<TunnelMaster::pair>(TunnelMaster::connected());
  auto started = std::make_shared<std::promise<void>>();
  auto going = started->get_future();
  auto f = asio::co_spawn(
      p->mine.get_executor(),
      [tn, p, started]() -> awaitable<std::pair<boost::system::error_code, std::uint64_t>> {
        auto reader = [&]() -> awaitable<std::pair<boost::system::error_code, std::uint64_t>> {
          std::array<std::uint8_t, 8> hdr{};
          put64(hdr.data(), 1ull << 32);
          co_await asio::async_write(p->mine, asio::buffer(hdr), use_awaitable);
          std::vector<char> buf(65536);
          std::uint64_t got = 0;
          bool told = false;
          for (;;) {
            auto [ec, n] =
                co_await p->mine.async_read_some(asio::buffer(buf), as_tuple(use_awaitable));
            got += n;
            if (ec) co_return std::pair{ec, got};
            if (!told && got > (1 << 20)) {
              told = true;
              started->set_value();
            }
          }
        };
        auto [flow, r] = co_await (tn->carry(std::move(p->theirs), target) && reader());
        EXPECT_TRUE(flow.reset);
        co_return r;
      },
      asio::use_future);
  ASSERT_EQ(going.wait_for(20s), std::future_status::ready);
  ::kill(old, signal);
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  const auto [ec, got] = f.get();
  // Never an EOF: a cut transfer must not look complete.
  EXPECT_EQ(ec, asio::error::connection_reset) << ec.message() << " after " << got << " bytes";
  EXPECT_TRUE(eventually([&] { return tn->up() && tn->pid() != old; }, 20s));
  // And the new ssh ends flows normally again.
  const auto o = TunnelMaster::carry(tn, target, 1000, 1000);
  expect_complete(o.client, 1000, 1000);
  EXPECT_FALSE(o.flow.reset) << o.flow.why;
}

TEST_F(TunnelMaster, FlowsAreResetWhenSshIsKilled) { expect_reset_when(t, SIGKILL); }

TEST_F(TunnelMaster, FlowsAreResetWhenSshExitsOnItsOwn) {
  // On SIGTERM (as on a lost server) ssh closes its channels before exiting, just as it
  // does when a channel ends normally.
  expect_reset_when(t, SIGTERM);
}

TEST_F(TunnelMaster, AStaleSocketFromAKilledMasterIsReplaced) {
  // What a master killed outright leaves: its socket file, with nothing listening.
  const auto path = dir->socket("stale");
  { asio::local::stream_protocol::acceptor a(io, asio::local::stream_protocol::endpoint(path)); }
  ASSERT_TRUE(std::filesystem::exists(path));
  auto tn = make("stale");
  EXPECT_TRUE(eventually([&] { return tn->up(); }, 20s)) << tn->last_error();
  tn->stop();
  EXPECT_TRUE(eventually([&] { return tn->current() == tn_::state::stopped; }, 5s));
}

TEST_F(TunnelMaster, AFailedProbeIsCheckedAgainATimeoutLaterNotAnIntervalLater) {
  // So a hung ssh is out of service within interval + 2 x timeout, not 2 x interval + timeout.
  // A timeout long enough that no probe fails on a busy machine before the SIGSTOP.
  constexpr auto interval = 4s, timeout = 1s;
  auto tn = make("hung", [&](tn_::options& o) {
    o.probe_interval = interval;
    o.probe_timeout = timeout;
  });
  ASSERT_TRUE(eventually([&] { return tn->up(); }, 20s)) << tn->last_error();
  const int pid = tn->pid();
  const auto failed = [&] {
    std::promise<bool> p;
    asio::post(io, [&] { p.set_value(!tn->health().last_failure.empty()); });
    return p.get_future().get();
  };
  ASSERT_FALSE(failed());
  ::kill(pid, SIGSTOP);
  const auto stopped = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually(failed, 10s));
  const auto first = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return !tn->up(); }, 10s));
  const auto out = std::chrono::steady_clock::now();
  EXPECT_LT(out - first, interval / 2);  // a whole interval before
  EXPECT_LT(out - stopped, interval + 2 * timeout + 1500ms);
  // Restarted: a stopped ssh is killed, not waited for.
  EXPECT_TRUE(eventually([&] { return tn->up() && tn->pid() != pid; }, 20s)) << tn->last_error();
  asio::post(io, [tn] { tn->stop(); });
  EXPECT_TRUE(eventually([&] { return tn->current() == tn_::state::stopped; }, 5s));
}

TEST_F(TunnelMaster, StopResetsOpenFlowsAtOnce) {
  auto tn = make("stopping");
  ASSERT_TRUE(eventually([&] { return tn->up(); }, 20s)) << tn->last_error();
  const int pid = tn->pid();
  auto p = connected();
  auto f = asio::co_spawn(io, tn->carry(std::move(p.theirs), target), asio::use_future);
  std::array<std::uint8_t, 8> hdr{};
  put64(hdr.data(), 0);  // an idle flow: nothing comes until the client's EOF
  asio::write(p.mine, asio::buffer(hdr));
  ASSERT_TRUE(eventually([&] { return tn->flows() == 1; }, 5s));
  std::this_thread::sleep_for(200ms);
  const auto asked = std::chrono::steady_clock::now();
  asio::post(io, [tn] { tn->stop(); });
  char b;
  boost::system::error_code ec;
  p.mine.read_some(asio::buffer(&b, 1), ec);
  EXPECT_EQ(ec, asio::error::connection_reset) << ec.message();
  EXPECT_LT(std::chrono::steady_clock::now() - asked, 1s);
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(f.get().reset);
  EXPECT_TRUE(eventually([&] { return tn->current() == tn_::state::stopped; }, 5s));
  EXPECT_NE(::kill(pid, 0), 0);  // gone, and reaped
}

}  // namespace
}  // namespace tprosshy::testing
