// The mux messages byte for byte, as OpenSSH 9.2's mux.c reads and writes them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "tunnel/mux.hpp"

namespace tprosshy::tunnel::mux {
namespace {

bytes hex(std::initializer_list<int> b) { return bytes(b.begin(), b.end()); }

TEST(Mux, Hello) { EXPECT_EQ(encode_hello(), hex({0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 4})); }

TEST(Mux, AliveCheck) {
  EXPECT_EQ(encode_alive_check(7), hex({0, 0, 0, 8, 0x10, 0, 0, 4, 0, 0, 0, 7}));
}

TEST(Mux, StdioForwardCarriesHostAndPortAsUint32) {
  const auto b = encode_stdio_fwd(1, "fd00::5", 443);
  const auto want = hex({0,    0, 0, 27,                                      // length
                         0x10, 0, 0, 8,                                       // MUX_C_NEW_STDIO_FWD
                         0,    0, 0, 1,                                       // request id
                         0,    0, 0, 0,                                       // reserved ""
                         0,    0, 0, 7,   'f', 'd', '0', '0', ':', ':', '5',  // host
                         0,    0, 1, 0xbb});                                  // port
  EXPECT_EQ(b, want);
}

TEST(Mux, NewSessionFlagsAreUint32) {
  const auto b = encode_new_session(3, "cat x");
  // length, type, id, reserved, 4 flags, escape, term "", command
  ASSERT_EQ(b.size(), 4u + 4 + 4 + 4 + 16 + 4 + 4 + 4 + 5);
  EXPECT_EQ(b[7], 2);  // MUX_C_NEW_SESSION
  EXPECT_EQ(std::vector<int>(b.begin() + 16, b.begin() + 32), std::vector<int>(16, 0));
  EXPECT_EQ(std::vector<int>(b.begin() + 32, b.begin() + 36), std::vector<int>(4, 0xff));
  EXPECT_EQ(std::string(b.end() - 5, b.end()), "cat x");
}

TEST(Mux, DecodesReplies) {
  auto alive = decode(hex({0x80, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0x10, 0x4c}));
  ASSERT_TRUE(alive);
  EXPECT_EQ(alive->type, mux::alive);
  EXPECT_EQ(alive->id, 7u);
  EXPECT_EQ(alive->value, 4172u);

  auto fail = decode(hex({0x80, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 'n', 'o'}));
  ASSERT_TRUE(fail);
  EXPECT_EQ(fail->type, failure);
  EXPECT_EQ(fail->text, "no");

  auto opened = decode(hex({0x80, 0, 0, 6, 0, 0, 0, 1, 0, 0, 0, 2}));
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->type, session_opened);
  EXPECT_EQ(opened->value, 2u);
}

TEST(Mux, RejectsTruncatedReplies) {
  EXPECT_FALSE(decode(hex({0x80, 0, 0})));
  EXPECT_FALSE(decode(hex({0x80, 0, 0, 5, 0, 0, 0, 7})));  // alive without pid
  EXPECT_FALSE(decode(hex({0x80, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 9, 'n', 'o'})));  // short string
  EXPECT_FALSE(decode(hex({0x80, 0, 0, 6, 0, 0, 0, 1})));
}

// Whatever listens at a control path gets the flow's descriptors next, so it must be our
// own ssh: SO_PEERCRED names the process that listens.
TEST(Mux, OpenTalksOnlyToTheNamedMaster) {
  namespace fs = std::filesystem;
  namespace asio = boost::asio;
  const auto dir = fs::temp_directory_path() / ("tprosshy-mux-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto path = (dir / "m").string();
  asio::io_context io;
  asio::local::stream_protocol::acceptor listener(io, asio::local::stream_protocol::endpoint(path));
  bool ours = false;
  std::string other;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto s = co_await open(path, encode_hello(), ::getpid());
        ours = s.is_open();
        try {
          co_await open(path, encode_hello(), ::getpid() + 1);
        } catch (const std::runtime_error& e) {
          other = e.what();
        }
      },
      asio::detached);
  io.run();
  fs::remove_all(dir);
  EXPECT_TRUE(ours);
  EXPECT_EQ(other, "control socket " + path + " is served by pid " + std::to_string(::getpid()) +
                       " (uid " + std::to_string(::getuid()) + "), not by ssh (pid " +
                       std::to_string(::getpid() + 1) + ")");
}

}  // namespace
}  // namespace tprosshy::tunnel::mux
