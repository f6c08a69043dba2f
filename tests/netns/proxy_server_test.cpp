// The proxy end to end: nft in the test's namespace redirects connects to 198.18.99.0/24
// and fd00:99::/64 to the proxy, which hands each flow to a real ssh master (tunnel) whose
// sshd, in a namespace of its own (ssh_server.hpp), reaches the target servers there.
#include <gtest/gtest.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <future>
#include <mutex>
#include <thread>

#include "flows.hpp"
#include "proxy/server.hpp"
#include "ssh_server.hpp"
#include "tunnel/control_dir.hpp"

namespace tprosshy::testing {
namespace {

namespace proxy = tprosshy::proxy;

class ProxyServer : public ::testing::Test {
 protected:
  static inline asio::io_context proxy_io, infra_io;
  static inline std::thread proxy_thread, infra_thread;
  static inline std::unique_ptr<ssh_server> srv;
  static inline std::unique_ptr<tunnel::control_dir> dir;
  static inline std::shared_ptr<tunnel::tunnel> tun, quick;  // quick: setups time out in 1 s
  static inline std::atomic<bool> use_quick{false};
  static inline std::unique_ptr<proxy::server> server;
  static inline std::vector<std::unique_ptr<tcp::acceptor>> targets;
  static inline std::atomic<bool> route_none{false};
  static inline std::atomic<int> router_calls{0};
  static inline std::mutex m;
  static inline std::vector<tcp::endpoint> routed;
  static inline std::vector<tunnel::flow_result> done;

  static void SetUpTestSuite() {
    if (std::getenv("TP_TEST_DEBUG")) spdlog::set_level(spdlog::level::debug);
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    srv = std::make_unique<ssh_server>();
    srv->in_server([] {
      for (auto a : {"198.18.99.5", "fd00:99::5"}) {
        targets.push_back(std::make_unique<tcp::acceptor>(
            infra_io, tcp::endpoint(asio::ip::make_address(a), 80)));
        targets.back()->listen(asio::socket_base::max_listen_connections);
      }
    });
    for (auto& t : targets) asio::co_spawn(infra_io, accept_loop(*t), asio::detached);

    dir = std::make_unique<tunnel::control_dir>();
    tunnel::options o;
    o.profile = "test";
    o.destination = srv->destination();
    o.ssh_args = srv->ssh_args();
    o.control_path = dir->socket("test");
    tun = std::make_shared<tunnel::tunnel>(proxy_io.get_executor(), o);
    asio::co_spawn(proxy_io, tun->run(), asio::detached);
    o.profile = "quick";
    o.control_path = dir->socket("quick");
    o.setup_timeout = 1s;
    quick = std::make_shared<tunnel::tunnel>(proxy_io.get_executor(), o);
    asio::co_spawn(proxy_io, quick->run(), asio::detached);

    server = std::make_unique<proxy::server>(
        proxy_io.get_executor(),
        std::vector<tcp::endpoint>{{asio::ip::make_address("127.0.0.1"), 0},
                                   {asio::ip::make_address("::1"), 0}},
        [](const tcp::endpoint& original) -> std::optional<proxy::route> {
          ++router_calls;
          {
            std::lock_guard l(m);
            routed.push_back(original);
          }
          if (route_none) return std::nullopt;
          return use_quick ? proxy::route{"quick", quick} : proxy::route{"test", tun};
        },
        [](const proxy::route&, const tunnel::flow_result& r) {
          std::lock_guard l(m);
          done.push_back(r);
        });
    const auto port = std::to_string(server->port());
    const std::string nft =
        "table inet t {\n chain o {\n  type nat hook output priority -100\n"
        "  ip daddr 198.18.99.0/24 tcp dport != 22 redirect to :" +
        port + "\n  ip6 daddr fd00:99::/64 tcp dport != 22 redirect to :" + port + "\n }\n}\n";
    const std::string cmd = "printf '" + nft + "' | nft -f -";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

    server->start();
    proxy_thread = std::thread([] {
      auto guard = asio::make_work_guard(proxy_io);
      proxy_io.run();
    });
    infra_thread = std::thread([] {
      auto guard = asio::make_work_guard(infra_io);
      infra_io.run();
    });
    ASSERT_TRUE(eventually([] { return tun->up() && quick->up(); }, 20s)) << tun->last_error();
  }

  static void TearDownTestSuite() {
    asio::post(proxy_io, [] {
      server->stop();
      tun->stop();
      quick->stop();
    });
    eventually(
        [] {
          return tun->current() == tunnel::state::stopped &&
                 quick->current() == tunnel::state::stopped;
        },
        5s);
    proxy_io.stop();
    infra_io.stop();
    if (proxy_thread.joinable()) proxy_thread.join();
    if (infra_thread.joinable()) infra_thread.join();
    server.reset();
    tun.reset();
    quick.reset();
    targets.clear();
    dir.reset();
    srv.reset();
  }

  void SetUp() override {
    route_none = false;
    use_quick = false;
    std::lock_guard l(m);
    routed.clear();
    done.clear();
  }

  void TearDown() override {
    // Every flow ends once both of its sides have: the counter must return to zero.
    EXPECT_TRUE(eventually([] { return server->active_flows() == 0; }, 10s))
        << server->active_flows() << " flows still open";
  }

  static awaitable<void> accept_loop(tcp::acceptor& acc) {
    for (;;) {
      auto [ec, s] = co_await acc.async_accept(as_tuple(use_awaitable));
      if (ec == asio::error::operation_aborted) co_return;
      if (ec) continue;
      asio::co_spawn(infra_io, target_session(std::move(s)), asio::detached);
    }
  }

  static result run(tcp::endpoint dst, std::uint64_t down, std::uint64_t up,
                    std::chrono::seconds limit = 60s) {
    auto f = asio::co_spawn(infra_io, client(dst, down, up), asio::use_future);
    if (f.wait_for(limit) != std::future_status::ready) {
      ADD_FAILURE() << "flow did not finish within " << limit.count() << " s";
      return {};
    }
    return f.get();
  }

  static std::vector<tunnel::flow_result> finished() {
    eventually([] { return server->active_flows() == 0; }, 10s);
    std::lock_guard l(m);
    return done;
  }

  static tcp::endpoint v4_target(unsigned short port = 80) {
    return {asio::ip::make_address("198.18.99.5"), port};
  }
  static tcp::endpoint v6_target() { return {asio::ip::make_address("fd00:99::5"), 80}; }
};

TEST_F(ProxyServer, BulkBothWaysArrivesIntactAndIsCountedExactly) {
  constexpr std::uint64_t size = 64ull << 20;
  const auto r = run(v4_target(), size, size, 120s);
  expect_complete(r, size, size);
  {
    std::lock_guard l(m);
    ASSERT_EQ(routed.size(), 1u);
    EXPECT_EQ(routed[0], v4_target());
  }
  const auto f = finished();
  ASSERT_EQ(f.size(), 1u);
  EXPECT_FALSE(f[0].reset) << f[0].why;
  EXPECT_EQ(f[0].up, 8 + size);
  EXPECT_EQ(f[0].down, size + 16);
}

TEST_F(ProxyServer, HalfCloseStillDeliversTheReply) {
  // The target answers only after it has seen our EOF; we must still receive all of it.
  const auto r = run(v4_target(), 0, 1000);
  expect_complete(r, 0, 1000);
}

TEST_F(ProxyServer, RefusedDestinationResetsTheClient) {
  const auto start = std::chrono::steady_clock::now();
  const auto r = run(v4_target(9), 100, 100, 10s);
  EXPECT_EQ(r.error, asio::error::connection_reset) << r.error.message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_EQ(r.down_ok, 0u);
  const auto f = finished();
  ASSERT_EQ(f.size(), 1u);
  EXPECT_TRUE(f[0].reset);
  EXPECT_FALSE(f[0].opened);
}

TEST_F(ProxyServer, HungTunnelResetsNewFlowsAfterTheSetupTimeout) {
  use_quick = true;
  const int pid = quick->pid();
  ASSERT_GT(pid, 0);
  ::kill(pid, SIGSTOP);
  const auto start = std::chrono::steady_clock::now();
  const auto r = run(v4_target(), 100, 100, 10s);
  const auto took = std::chrono::steady_clock::now() - start;
  ::kill(pid, SIGCONT);
  EXPECT_EQ(r.error, asio::error::connection_reset) << r.error.message();
  EXPECT_GE(took, 1s);
  EXPECT_LT(took, 5s);
  // Once ssh runs again, flows go through.
  expect_complete(run(v4_target(), 1000, 1000), 1000, 1000);
}

TEST_F(ProxyServer, NoRouteResets) {
  route_none = true;
  const int calls = router_calls;
  const auto r = run(v4_target(), 100, 100, 10s);
  EXPECT_EQ(r.error, asio::error::connection_reset) << r.error.message();
  EXPECT_EQ(router_calls, calls + 1);
  EXPECT_TRUE(finished().empty());  // the tunnel was never asked
}

TEST_F(ProxyServer, DirectConnectionIsRefusedWithoutAskingTheRouter) {
  const int calls = router_calls;
  for (const auto& ep : server->local_endpoints()) {
    const auto r = run(ep, 100, 100, 10s);
    EXPECT_EQ(r.error, asio::error::connection_reset) << ep << ": " << r.error.message();
  }
  EXPECT_EQ(server->local_endpoints().size(), 2u);
  EXPECT_EQ(router_calls, calls);
  EXPECT_TRUE(finished().empty());
}

TEST_F(ProxyServer, Ipv6Destination) {
  constexpr std::uint64_t size = 1 << 20;
  const auto r = run(v6_target(), size, size);
  expect_complete(r, size, size);
  std::lock_guard l(m);
  ASSERT_EQ(routed.size(), 1u);
  EXPECT_EQ(routed[0], v6_target());
}

TEST_F(ProxyServer, AThousandConcurrentFlowsComplete) {
  // Far more than the master's accept queue (64) at once: setups wait their turn. (Small
  // transfers: a thousand bulk flows at once through one ssh make ssh itself crawl.)
  constexpr int flows = 1000;
  constexpr std::uint64_t size = 8 << 10;
  std::vector<std::future<result>> fs;
  for (int i = 0; i < flows; ++i) {
    const auto dst = i % 2 ? v4_target() : v6_target();
    fs.push_back(asio::co_spawn(infra_io, client(dst, size, size), asio::use_future));
  }
  const auto end = std::chrono::steady_clock::now() + 120s;
  int ok = 0, shown = 0;
  for (auto& f : fs) {
    ASSERT_EQ(f.wait_until(end), std::future_status::ready);
    const auto r = f.get();
    if (!r.error && r.down_ok == size && !r.down_mismatch && r.trailer && r.trailer_count == size &&
        r.trailer_hash == r.up_hash)
      ++ok;
    else if (++shown <= 5)
      ADD_FAILURE() << "flow: " << r.error.message() << ", " << r.down_ok << " bytes down, trailer "
                    << r.trailer;
  }
  EXPECT_EQ(ok, flows);
  EXPECT_EQ(finished().size(), static_cast<std::size_t>(flows));
}

}  // namespace
}  // namespace tprosshy::testing
