#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "control/protocol.hpp"

namespace tprosshy::control {
namespace {

using verb = request::verb;

TEST(ControlProtocol, ParsesTheThreeRequests) {
  EXPECT_EQ(parse_request("status"), (request{verb::status, ""}));
  EXPECT_EQ(parse_request("status\r"), (request{verb::status, ""}));
  EXPECT_EQ(parse_request("status json"), (request{verb::status_json, ""}));
  EXPECT_EQ(parse_request("reload /etc/tprosshy/config.yaml"),
            (request{verb::reload, "/etc/tprosshy/config.yaml"}));
  EXPECT_EQ(parse_request("reload /a dir/with spaces.yaml"),
            (request{verb::reload, "/a dir/with spaces.yaml"}));
}

TEST(ControlProtocol, RefusesOthers) {
  for (std::string_view bad : {"", "STATUS", "status  json", "status yaml", " status", "reload",
                               "reload ", "reload config.yaml", "reload ~/x.yaml", "stop"})
    EXPECT_THROW(parse_request(bad), bad_request) << bad;
  EXPECT_THROW(parse_request(std::string_view("reload /a\0b", 11)), bad_request);
  EXPECT_THROW(parse_request("reload /a\tb"), bad_request);
  EXPECT_THROW(parse_request("reload /" + std::string(max_request, 'a')), bad_request);
  EXPECT_NO_THROW(parse_request("reload /" + std::string(max_request - 8, 'a')));
  try {
    parse_request("frobnicate");
    FAIL();
  } catch (const bad_request& e) {
    EXPECT_STREQ(e.what(), "unknown request 'frobnicate' (status, status json, reload PATH)");
  }
}

TEST(ControlProtocol, ReloadLineIsAbsolute) {
  const auto cwd = std::filesystem::current_path();
  EXPECT_EQ(reload_line("/etc/t.yaml"), "reload /etc/t.yaml");
  EXPECT_EQ(reload_line("t.yaml"), "reload " + (cwd / "t.yaml").string());
  EXPECT_EQ(parse_request(reload_line("sub/t.yaml")).config, (cwd / "sub/t.yaml").string());
  EXPECT_THROW(reload_line("a\nb.yaml"), bad_request);
  EXPECT_THROW(reload_line("/" + std::string(max_request, 'a')), bad_request);
}

TEST(ControlProtocol, RepliesRoundTrip) {
  for (const reply& r : {reply{0, "ok\n"}, reply{78, "c.yaml:3:5: unknown key 'x'\n"}, reply{0, ""},
                         reply{255, std::string("a\0\nb\n\n", 6)}}) {
    EXPECT_EQ(decode(encode(r)), r);
  }
  EXPECT_EQ(encode({78, "bad\n"}), "78\nbad\n");
}

TEST(ControlProtocol, RefusesPartialReplies) {
  for (std::string_view bad : {"", "0", "78", "\nx", "x\n", "-1\n", "256\n", "1 \n", "+1\n"})
    EXPECT_THROW(decode(bad), bad_request) << bad;
}

}  // namespace
}  // namespace tprosshy::control
