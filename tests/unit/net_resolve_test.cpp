// Lookups must finish however often the program spawns processes meanwhile: Boost.Process
// tells the spawning io_context about each fork, and Asio's resolver service of that
// context then stops its lookup thread (DESIGN.md, facts checked).
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>

#include "net/resolve.hpp"
#include "tunnel/process.hpp"

namespace tprosshy::net {
namespace {

namespace asio = boost::asio;

TEST(Resolve, FinishesWhileProcessesAreSpawned) {
  asio::io_context io;
  constexpr int rounds = 300;
  int resolved = 0, spawned = 0;
  for (int i = 0; i < rounds; ++i) {
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          auto eps = co_await resolve("localhost", "22");
          EXPECT_FALSE(eps.empty());
          ++resolved;
        },
        asio::detached);
    // A spawn right behind each lookup, on the same io_context.
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          tunnel::bp::process p(io, "/bin/true", {});
          co_await p.async_wait(asio::use_awaitable);
          ++spawned;
        },
        asio::detached);
  }
  io.run_for(std::chrono::seconds(60));
  EXPECT_EQ(spawned, rounds);
  EXPECT_EQ(resolved, rounds);
}

TEST(Resolve, FailureThrows) {
  asio::io_context io;
  bool threw = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        try {
          co_await resolve("no-such-host.invalid", "22");
        } catch (const boost::system::system_error&) {
          threw = true;
        }
      },
      asio::detached);
  io.run_for(std::chrono::seconds(30));
  EXPECT_TRUE(threw);
}

}  // namespace
}  // namespace tprosshy::net
