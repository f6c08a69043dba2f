// The per-master cap on channel setups: never more holders than the limit, waiters served
// in order, and a waiter that gives up (a timed-out setup) neither holds nor loses a slot.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <vector>

#include "tunnel/gate.hpp"

namespace tprosshy::tunnel {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

TEST(Gate, NeverMoreThanTheLimitAndFirstComeFirstServed) {
  asio::io_context io;
  gate g(io.get_executor(), 3);
  std::size_t most = 0;
  std::vector<int> order;
  for (int i = 0; i < 10; ++i)
    asio::co_spawn(
        io,
        [&, i]() -> asio::awaitable<void> {
          auto s = co_await g.enter();
          order.push_back(i);
          most = std::max(most, g.held());
          co_await sleep_for(5ms);
        },
        asio::detached);
  io.run();
  EXPECT_EQ(most, 3u);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(g.held(), 0u);
}

TEST(Gate, AnUrgentWaiterGoesFirst) {
  asio::io_context io;
  gate g(io.get_executor(), 1);
  std::vector<int> order;
  for (int i = 0; i < 5; ++i)
    asio::co_spawn(
        io,
        [&, i]() -> asio::awaitable<void> {
          if (i == 4) co_await sleep_for(1ms);  // queued last, behind three waiters
          auto s = co_await g.enter(i == 4);
          order.push_back(i);
          co_await sleep_for(5ms);
        },
        asio::detached);
  io.run();
  EXPECT_EQ(order, (std::vector<int>{0, 4, 1, 2, 3}));
}

TEST(Gate, AWaiterThatGivesUpLeavesTheQueue) {
  using namespace asio::experimental::awaitable_operators;
  asio::io_context io;
  gate g(io.get_executor(), 1);
  bool late_entered = false, quitter_entered = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto s = co_await g.enter();
        co_await sleep_for(50ms);
      },
      asio::detached);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto wait = [&]() -> asio::awaitable<void> {
          auto s = co_await g.enter();
          quitter_entered = true;
        };
        try {
          co_await (wait() || sleep_for(10ms));  // gives up long before the slot frees
        } catch (...) {
        }
      },
      asio::detached);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await sleep_for(1ms);
        auto s = co_await g.enter();
        late_entered = true;
      },
      asio::detached);
  io.run();
  EXPECT_FALSE(quitter_entered);
  EXPECT_TRUE(late_entered);
  EXPECT_EQ(g.held(), 0u);
}

}  // namespace
}  // namespace tprosshy::tunnel
