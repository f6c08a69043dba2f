// Good configs load into the values they say: the whole contract, includes with override,
// defaults merge order, ${VAR} and ~ expansion, IPv6, default values, positions.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <system_error>

#include "config/config.hpp"
#include "config/schema.hpp"
#include "config/tree.hpp"
#include "config_bounded.hpp"

namespace {

namespace fs = std::filesystem;
using namespace tprosshy;
using config::load;
using testing::ElementsAre;

const fs::path source_dir = TPROSSHY_SOURCE_DIR;
const fs::path good_dir = source_dir / "tests/unit/data/config/good";

net::prefix P(const char* text) { return *net::parse_prefix(text); }

class load_test : public testing::Test {
 protected:
  void SetUp() override {
    old_ = fs::current_path();
    setenv("HOME", "/home/tester", 1);
    setenv("TPROSSHY_TEST_HOST", "bastion.example.com", 1);
    setenv("TPROSSHY_TEST_PORT", "2222", 1);
    setenv("TPROSSHY_TEST_DIR", "inc", 1);
    tmp_ = fs::temp_directory_path() / ("tprosshy-config-test-" + std::to_string(getpid()));
    fs::create_directories(tmp_);
  }
  void TearDown() override {
    fs::current_path(old_);
    fs::remove_all(tmp_);
  }
  fs::path write(const std::string& name, const std::string& text) {
    auto p = tmp_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p;
  }
  std::string error_of(const fs::path& file) {
    try {
      load(file);
    } catch (const config::error& e) {
      return e.what();
    }
    return "";
  }
  // Loads in a child process bounded in time and memory (config_bounded.hpp): the config
  // error's message, "" if none, or "[killed by signal 11]", "[timed out after 2 s]", ...
  std::string bounded_load(const fs::path& file) {
    auto got = test::bounded([&] { load(file); });
    return got.other.empty() ? got.error : "[" + got.other + "]";
  }

  fs::path old_, tmp_;
};

TEST_F(load_test, full_contract) {
  auto c = load(good_dir / "full.yaml");
  EXPECT_EQ(c.file, good_dir / "full.yaml");
  EXPECT_EQ(c.mode, config::run_mode::local);
  EXPECT_THAT(c.gateway_interfaces, ElementsAre("eth1"));
  EXPECT_EQ(c.listen_address, boost::asio::ip::make_address("127.0.0.2"));
  EXPECT_EQ(c.tcp_port, 12300);
  EXPECT_EQ(c.dns_port, 12353);
  EXPECT_THAT(c.dns_upstream, ElementsAre("system", "9.9.9.9", "149.112.112.112:5353",
                                          "[2620:fe::fe]:53", "2620:fe::9"));
  EXPECT_EQ(c.capture, config::dns_capture::all);
  EXPECT_EQ(c.cache_size, 0u);
  EXPECT_EQ(c.on_start_failure, config::start_failure::retry);
  EXPECT_THAT(c.exclude, ElementsAre(P("192.168.0.0/16"), P("fd00:99::/32")));
  EXPECT_EQ(c.log_level, "debug");
  ASSERT_EQ(c.profiles.size(), 3u);

  auto& corp = c.profiles[0];
  EXPECT_EQ(corp.name, "corp");
  EXPECT_EQ(corp.host, "user@corp-bastion");
  // The profile's own ssh_args first: ssh keeps the first value of an option.
  EXPECT_THAT(corp.ssh_args,
              ElementsAre("-i", "/home/tester/.ssh/corp", "-F", "/home/tester/.ssh/config"));
  EXPECT_THAT(corp.subnets, ElementsAre(P("10.20.0.0/16"), P("fd00:20::/48")));
  EXPECT_THAT(corp.exclude, ElementsAre(P("10.20.99.0/24"), P("10.20.5.0/24")));
  EXPECT_THAT(corp.dns.domains,
              ElementsAre("shared.example", "corp.example.com", "corp.example.org"));
  EXPECT_EQ(corp.dns.nameserver, "auto");  // its own beats defaults' 10.0.0.53
  EXPECT_TRUE(corp.dns.learn_routes);      // its own beats defaults' false
  EXPECT_TRUE(corp.enabled);
  EXPECT_EQ(corp.where.to_string(), (good_dir / "full.yaml").string() + ":27:3");

  auto& lab = c.profiles[1];
  EXPECT_EQ(lab.name, "lab");
  EXPECT_EQ(lab.host, "ssh://root@lab.example:2222");
  EXPECT_THAT(lab.ssh_args, ElementsAre("-F", "/home/tester/.ssh/config"));
  EXPECT_THAT(lab.subnets, ElementsAre(P("198.19.0.0/24"), P("198.19.1.7/32")));
  EXPECT_THAT(lab.exclude, ElementsAre(P("10.20.99.0/24")));
  EXPECT_THAT(lab.dns.domains, ElementsAre("shared.example", "."));
  EXPECT_EQ(lab.dns.nameserver, "[fd00:1::53]:5353");
  EXPECT_FALSE(lab.dns.learn_routes);  // from defaults

  EXPECT_EQ(c.profiles[2].name, "old");
  EXPECT_FALSE(c.profiles[2].enabled);
}

TEST_F(load_test, defaults_when_keys_are_absent) {
  auto c = load(good_dir / "minimal.yaml");
  config::config d;
  EXPECT_EQ(c.mode, d.mode);
  EXPECT_TRUE(c.gateway_interfaces.empty());
  EXPECT_FALSE(c.listen_address);
  EXPECT_EQ(c.tcp_port, 0);
  EXPECT_EQ(c.dns_port, 0);
  EXPECT_THAT(c.dns_upstream, ElementsAre("system"));
  EXPECT_EQ(c.capture, config::dns_capture::resolvers);
  EXPECT_EQ(c.cache_size, 10000u);
  EXPECT_EQ(c.on_start_failure, config::start_failure::exit);
  EXPECT_TRUE(c.exclude.empty());
  EXPECT_EQ(c.log_level, "info");
  ASSERT_EQ(c.profiles.size(), 1u);
  auto& p = c.profiles[0];
  EXPECT_EQ(p.host, "bastion");
  EXPECT_TRUE(p.ssh_args.empty() && p.subnets.empty() && p.exclude.empty());
  EXPECT_TRUE(p.dns.domains.empty());
  EXPECT_EQ(p.dns.nameserver, "auto");
  EXPECT_TRUE(p.dns.learn_routes);
  EXPECT_TRUE(p.enabled);
}

TEST_F(load_test, includes_merge_first_and_the_includer_wins_key_by_key) {
  fs::current_path(good_dir);
  auto c = load("include_override.yaml");
  EXPECT_EQ(c.tcp_port, 2000);     // overridden
  EXPECT_EQ(c.dns_port, 1053);     // kept from inc/team.yaml
  EXPECT_EQ(c.cache_size, 50u);    // from inc/nested.yaml, included by inc/team.yaml
  EXPECT_EQ(c.log_level, "warn");  // from inc/team.yaml
  EXPECT_THAT(c.exclude, ElementsAre(P("172.16.0.0/12"), P("192.168.0.0/16")));  // concatenated
  ASSERT_EQ(c.profiles.size(), 4u);  // includes first, in declaration order
  EXPECT_EQ(c.profiles[0].name, "nested");
  EXPECT_EQ(c.profiles[1].name, "corp");
  EXPECT_EQ(c.profiles[2].name, "lab");
  EXPECT_EQ(c.profiles[3].name, "mine");
  EXPECT_EQ(c.profiles[1].host, "corp-bastion");
  EXPECT_FALSE(c.profiles[1].enabled);  // `corp: {enabled: false}` over the team's corp
  EXPECT_EQ(c.profiles[1].where.to_string(), "inc/team.yaml:10:3");
  auto& lab = c.profiles[2];
  EXPECT_EQ(lab.dns.nameserver, "198.18.2.53");  // nested map merged key by key
  EXPECT_THAT(lab.dns.domains, ElementsAre("lab.example"));
  EXPECT_FALSE(lab.dns.learn_routes);
  EXPECT_THAT(lab.subnets, ElementsAre(P("198.18.2.0/24")));
  EXPECT_EQ(c.file, good_dir / "include_override.yaml");
}

TEST_F(load_test, expands_variables_and_home) {
  fs::current_path(good_dir);
  auto c = load("expansion.yaml");
  EXPECT_EQ(c.tcp_port, 2222);  // a plain scalar's type is decided after expansion
  ASSERT_EQ(c.profiles.size(), 2u);
  EXPECT_EQ(c.profiles[0].name, "nested");  // include path came from ${TPROSSHY_TEST_DIR}
  auto& p = c.profiles[1];
  EXPECT_EQ(p.host, "bastion.example.com");
  EXPECT_THAT(p.ssh_args, ElementsAre("-i", "/home/tester/.ssh/corp", "-F", "/home/tester",
                                      "-oUser=bastion.example.comx", "a~/b"));
}

TEST_F(load_test, variables_come_from_the_environment_at_load_time) {
  auto f = write("env.yaml", "profiles:\n  a:\n    host: ${TPROSSHY_TEST_HOST}\n");
  setenv("TPROSSHY_TEST_HOST", "other", 1);
  EXPECT_EQ(load(f).profiles[0].host, "other");
  unsetenv("TPROSSHY_TEST_HOST");
  EXPECT_EQ(error_of(f), f.string() +
                             ":3:11: profiles.a.host: environment variable TPROSSHY_TEST_HOST is "
                             "not set (used in '${TPROSSHY_TEST_HOST}')");
  unsetenv("HOME");
  auto g = write("home.yaml", "profiles:\n  a:\n    host: h\n    ssh_args: [~/x]\n");
  EXPECT_EQ(error_of(g), g.string() +
                             ":4:16: profiles.a.ssh_args[0]: '~/x' starts with ~ but "
                             "HOME is not set");
}

TEST_F(load_test, ipv6_everywhere) {
  auto c = load(good_dir / "ipv6.yaml");
  EXPECT_EQ(c.listen_address, boost::asio::ip::make_address("::1"));
  EXPECT_THAT(c.exclude, ElementsAre(P("fd00:20:5::/64")));
  auto& p = c.profiles.at(0);
  EXPECT_THAT(p.subnets, ElementsAre(P("fd00:20::/48"), P("fd00:30::1/128"), P("2001:db8::/32")));
  EXPECT_EQ(p.subnets[1].length, 128u);
  EXPECT_EQ(p.dns.nameserver, "fd00:20::53");
  auto& bare = c.profiles.at(1);
  EXPECT_THAT(bare.subnets, ElementsAre(P("fd00:40::/48")));
  EXPECT_THAT(bare.exclude, ElementsAre(P("fd00:40:1::/64")));
}

TEST_F(load_test, gateway_mode_may_listen_on_the_lan) {
  auto c = load(good_dir / "gateway.yaml");
  EXPECT_EQ(c.mode, config::run_mode::gateway);
  EXPECT_THAT(c.gateway_interfaces, ElementsAre("eth1", "br-lan"));
  EXPECT_EQ(c.listen_address, boost::asio::ip::make_address("198.18.10.1"));
  EXPECT_THAT(c.profiles.at(0).subnets, ElementsAre(P("0.0.0.0/0"), P("::/0")));
}

TEST_F(load_test, a_disabled_profile_claims_nothing) {
  auto c = load(good_dir / "disabled_duplicate.yaml");
  EXPECT_TRUE(c.profiles.at(0).enabled);
  EXPECT_FALSE(c.profiles.at(1).enabled);
  // Enabling it makes the same file an error that names both places.
  auto f = write("dup.yaml",
                 "profiles:\n  corp:\n    host: a\n    subnets: [10.20.0.0/16]\n"
                 "  lab:\n    host: b\n    subnets: [10.20.0.0/16]\n");
  EXPECT_EQ(error_of(f), f.string() +
                             ":7:15: profiles.lab.subnets[0]: 10.20.0.0/16 is already "
                             "routed by profile 'corp' (" +
                             f.string() + ":4:15); two profiles cannot claim the same prefix");
}

TEST_F(load_test, missing_or_unreadable_file_is_a_system_error) {
  try {
    load(tmp_ / "nope.yaml");
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
  }
  try {
    load(tmp_);
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::is_a_directory);
  }
}

TEST_F(load_test, error_carries_its_location_and_message) {
  auto f = write("e.yaml", "profiles:\n  a:\n    host: h\n    enabled: 1\n");
  try {
    load(f);
    FAIL() << "no exception";
  } catch (const config::error& e) {
    EXPECT_EQ(e.where().file, f.string());
    EXPECT_EQ(e.where().line, 4);
    EXPECT_EQ(e.where().column, 14);
    EXPECT_EQ(e.message(), "profiles.a.enabled: expected true or false, got integer 1");
  }
}

TEST_F(load_test, ssh_user_names_an_account_of_the_password_database) {
  auto ok = load(write("u.yaml", "ssh_user: root\nprofiles:\n  a: {host: h}\n"));
  EXPECT_EQ(ok.ssh_user, "root");
  EXPECT_EQ(ok.ssh_user_at.line, 1);
  EXPECT_EQ(ok.ssh_user_at.column, 11);
  EXPECT_EQ(load(write("n.yaml", "profiles:\n  a: {host: h}\n")).ssh_user, "");
  auto f = write("gone.yaml", "ssh_user: tprosshy-no-such-account\nprofiles:\n  a: {host: h}\n");
  try {
    load(f);
    FAIL() << "no exception";
  } catch (const config::error& e) {
    EXPECT_EQ(e.where().line, 1);
    EXPECT_EQ(e.where().column, 11);
    EXPECT_EQ(e.message(),
              "ssh_user: no account 'tprosshy-no-such-account' in the password database");
  }
  auto bad = write("bad.yaml", "ssh_user: \"root; id\"\nprofiles:\n  a: {host: h}\n");
  EXPECT_THROW(load(bad), config::error);
}

TEST_F(load_test, learned_routes_are_bounded_in_number_and_time) {
  auto d = load(write("d.yaml", "profiles:\n  a: {host: h}\n"));
  EXPECT_EQ(d.profiles[0].dns.learn_limit, 65536u);
  EXPECT_EQ(d.profiles[0].dns.learn_ttl_max, std::chrono::hours(24));
  auto c = load(write("c.yaml",
                      "defaults: {dns: {learn_limit: 10}}\nprofiles:\n  a: {host: h, dns: "
                      "{learn_ttl_max: 5m}}\n  b: {host: i, dns: {learn_limit: 3}}\n"));
  EXPECT_EQ(c.profiles[0].dns.learn_limit, 10u);
  EXPECT_EQ(c.profiles[0].dns.learn_ttl_max, std::chrono::minutes(5));
  EXPECT_EQ(c.profiles[1].dns.learn_limit, 3u);
  for (auto bad :
       {"learn_ttl_max: 48h", "learn_ttl_max: 0", "learn_limit: 0", "learn_limit: 65537"})
    EXPECT_THROW(
        load(write("bad.yaml", std::string("profiles:\n  a: {host: h, dns: {") + bad + "}}\n")),
        config::error)
        << bad;
}

TEST_F(load_test, an_absolute_include_is_named_as_written) {
  auto team = write("abs/team.yaml", "profiles:\n  t:\n    hots: x\n");
  auto f = write("main.yaml", "include: [" + team.string() + "]\nprofiles:\n  a: {host: h}\n");
  EXPECT_EQ(error_of(f), team.string() +
                             ":3:5: profiles.t.hots: unknown key 'hots' (did you "
                             "mean 'host'?)");
}

TEST_F(load_test, include_relative_to_the_including_file_not_the_cwd) {
  write("sub/dir/team.yaml", "profiles:\n  t: {host: team, subnets: [10.9.0.0/16]}\n");
  write("sub/main.yaml", "include: [dir/team.yaml]\nprofiles:\n  a: {host: h}\n");
  fs::current_path(tmp_);
  auto c = load("sub/main.yaml");
  ASSERT_EQ(c.profiles.size(), 2u);
  EXPECT_EQ(c.profiles[0].where.file, "sub/dir/team.yaml");
  // A file included twice (diamond, not a cycle) is fine.
  write("sub/x.yaml", "include: [dir/team.yaml]\n");
  write("sub/main2.yaml", "include: [dir/team.yaml, x.yaml]\nprofiles:\n  a: {host: h}\n");
  EXPECT_EQ(load("sub/main2.yaml").profiles.size(), 2u);
}

TEST_F(load_test, empty_file_names_the_missing_profiles) {
  auto f = write("empty.yaml", "");
  EXPECT_EQ(error_of(f), f.string() + ":1:1: profiles: required key is missing");
}

TEST_F(load_test, listen_and_nameserver_forms) {
  auto f = write("l.yaml",
                 "listen: {address: 127.0.0.53}\nprofiles:\n  a:\n    host: h\n"
                 "    dns: {nameserver: '[::1]'}\n");
  auto c = load(f);
  EXPECT_EQ(c.listen_address, boost::asio::ip::make_address("127.0.0.53"));
  EXPECT_EQ(c.profiles[0].dns.nameserver, "::1");
}

// Issue 9, point 7: std::regex recursed once per character and a plain scalar of about 30,000
// characters overflowed the stack, whichever key it was in.
TEST_F(load_test, a_long_value_is_an_error_naming_the_limit_not_a_crash) {
  std::string big(40000, 'a');
  auto host = write("host.yaml", "profiles:\n  a:\n    host: " + big + "\n");
  EXPECT_EQ(bounded_load(host),
            host.string() + ":3:11: profiles.a.host: value is 40000 bytes long; the limit is 4096");
  auto quoted = write("quoted.yaml", "profiles:\n  a:\n    host: '" + big + "'\n");
  EXPECT_EQ(
      bounded_load(quoted),
      quoted.string() + ":3:11: profiles.a.host: value is 40000 bytes long; the limit is 4096");
  auto domain =
      write("domain.yaml", "profiles:\n  a:\n    host: h\n    dns: {domains: [" + big + "]}\n");
  EXPECT_EQ(bounded_load(domain),
            domain.string() +
                ":4:21: profiles.a.dns.domains[0]: value is 40000 bytes long; the limit is 4096");
  auto var = write("var.yaml", "profiles:\n  a:\n    host: ${" + big + "}\n");
  EXPECT_EQ(bounded_load(var),
            var.string() + ":3:11: profiles.a.host: value is 40003 bytes long; the limit is 4096");
  // An implicit key is at most 1024 characters in YAML (yaml-cpp says so); an explicit one
  // has no such bound.
  auto key = write("key.yaml", "profiles:\n  a:\n    ? " + big + "\n    : h\n");
  EXPECT_EQ(bounded_load(key),
            key.string() + ":3:7: profiles.a: key is 40000 bytes long; the limit is 4096");
  // Just under the limit, each of them is matched without std::regex, in linear time.
  std::string most(4096, 'a');
  auto fine =
      write("fine.yaml", "profiles:\n  a:\n    host: " + most + "\n    dns: {domains: [" + most +
                             "]}\n    ssh_args: ['${" + most.substr(0, most.size() - 3) + "}']\n");
  EXPECT_EQ(bounded_load(fine), fine.string() +
                                    ":5:16: profiles.a.ssh_args[0]: environment variable " +
                                    most.substr(0, most.size() - 3) + " is not set (used in '${" +
                                    most.substr(0, most.size() - 3) + "}')");
}

TEST_F(load_test, a_value_that_expands_past_the_limit_is_an_error) {
  setenv("TPROSSHY_TEST_BIG", std::string(3000, 'x').c_str(), 1);
  auto f =
      write("env.yaml", "profiles:\n  a:\n    host: ${TPROSSHY_TEST_BIG}${TPROSSHY_TEST_BIG}\n");
  EXPECT_EQ(bounded_load(f),
            f.string() +
                ":3:11: profiles.a.host: '${TPROSSHY_TEST_BIG}${TPROSSHY_TEST_BIG}' is more than "
                "4096 bytes long once expanded; the limit is 4096");
  unsetenv("TPROSSHY_TEST_BIG");
}

// Issue 9, point 8: aliases, files and includes that grow without bound.
TEST_F(load_test, billion_laughs_stop_at_the_node_limit) {
  std::string text = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n";
  for (int i = 1; i < 12; ++i) {
    text += "l" + std::to_string(i) + ": &l" + std::to_string(i) + " [";
    for (int j = 0; j < 10; ++j) text += (j ? ", *l" : "*l") + std::to_string(i - 1);
    text += "]\n";
  }
  auto f = write("laughs.yaml", text + "profiles:\n  a: {host: h, ssh_args: *l11}\n");
  EXPECT_EQ(bounded_load(f),
            f.string() +
                ":5:40: the config has too many nodes: the limit is 100000 keys, values, lists "
                "and maps in all files, with every alias expanded");
}

TEST_F(load_test, one_long_value_used_many_times_stops_at_the_text_limit) {
  std::string text = "defaults:\n  ssh_args: &v ['" + std::string(4000, 'v') + "']\nprofiles:\n";
  for (int i = 0; i < 2200; ++i) text += "  p" + std::to_string(i) + ": {host: h, ssh_args: *v}\n";
  auto f = write("text.yaml", text);
  EXPECT_THAT(
      bounded_load(f),
      testing::EndsWith(": the config has too much text: the limit is 8388608 bytes of keys "
                        "and values in all files, with every alias expanded"));
}

TEST_F(load_test, nodes_are_counted_across_included_files) {
  // About 30,000 nodes a file once its aliases are expanded; the fourth file passes the limit.
  std::string text = "profiles:\n  p0: {host: h, ssh_args: &a [x";
  for (int i = 1; i < 1000; ++i) text += ", x";
  text += "]}\n";
  for (int i = 1; i < 30; ++i) text += "  p" + std::to_string(i) + ": {host: h, ssh_args: *a}\n";
  write("big.yaml", text);
  auto f = write("main.yaml", "include: [big.yaml, big.yaml, big.yaml, big.yaml]\n");
  auto got = bounded_load(f);
  EXPECT_THAT(got, testing::StartsWith((tmp_ / "big.yaml").string() + ":"));
  EXPECT_THAT(got, testing::HasSubstr("too many nodes: the limit is 100000"));
  // Three of them are fine.
  auto g = write("three.yaml", "include: [big.yaml, big.yaml, big.yaml]\n");
  EXPECT_EQ(bounded_load(g), "");
}

TEST_F(load_test, a_diamond_of_includes_stops_at_the_depth_limit) {
  // Each file includes the next twice: 2^24 loads without a limit.
  for (int i = 1; i < 24; ++i)
    write("d" + std::to_string(i) + ".yaml",
          "include: [d" + std::to_string(i + 1) + ".yaml, d" + std::to_string(i + 1) + ".yaml]\n");
  write("d24.yaml", "exclude: [10.0.0.0/8]\n");
  auto f = write("d0.yaml", "include: [d1.yaml, d1.yaml]\nprofiles:\n  a: {host: h}\n");
  EXPECT_EQ(bounded_load(f), (tmp_ / "d8.yaml").string() + ":1:11: include[0]: '" +
                                 (tmp_ / "d9.yaml").string() +
                                 "' would be included 9 levels deep; the limit is 8");
}

TEST_F(load_test, includes_stop_at_the_count_limit) {
  write("leaf.yaml", "exclude: [10.0.0.0/8]\n");
  std::string list = "include: [";
  for (int i = 0; i < 200; ++i) list += i ? ", leaf.yaml" : "leaf.yaml";
  auto f = write("many.yaml", list + "]\nprofiles:\n  a: {host: h}\n");
  int column = static_cast<int>(std::string("include: [").size() + 128 * 11 + 1);
  EXPECT_EQ(bounded_load(f),
            f.string() + ":1:" + std::to_string(column) + ": include[128]: '" +
                (tmp_ / "leaf.yaml").string() +
                "' would be file number 129 read through include (a file included twice "
                "counts twice); the limit is 128");
  // 128 is fine.
  list = "include: [";
  for (int i = 0; i < 128; ++i) list += i ? ", leaf.yaml" : "leaf.yaml";
  auto g = write("enough.yaml", list + "]\nprofiles:\n  a: {host: h}\n");
  EXPECT_EQ(bounded_load(g), "");
}

TEST_F(load_test, dev_zero_is_refused_as_an_include_and_as_the_config) {
  auto f = write("zero.yaml", "include: [/dev/zero]\nprofiles:\n  a: {host: h}\n");
  EXPECT_EQ(bounded_load(f),
            f.string() +
                ":1:11: include[0]: '/dev/zero' is a character device, not a regular file; only "
                "regular files can be included");
  // The top-level file: still a config error (exit 78), at line 1, column 1 of that file.
  EXPECT_EQ(bounded_load("/dev/zero"),
            "/dev/zero:1:1: this is a character device, not a regular file; tprosshy reads its "
            "configuration from regular files only");
}

TEST_F(load_test, a_fifo_is_refused_without_blocking) {
  auto fifo = tmp_ / "fifo.yaml";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto f = write("main.yaml", "include: [fifo.yaml]\nprofiles:\n  a: {host: h}\n");
  EXPECT_EQ(bounded_load(f),
            f.string() + ":1:11: include[0]: '" + fifo.string() +
                "' is a FIFO, not a regular file; only regular files can be included");
  EXPECT_EQ(bounded_load(fifo),
            fifo.string() +
                ":1:1: this is a FIFO, not a regular file; tprosshy reads its configuration "
                "from regular files only");
}

TEST_F(load_test, a_file_over_the_size_limit_is_refused) {
  std::string comment = "# " + std::string(98, 'x') + "\n";
  std::string text = "profiles:\n  a: {host: h}\n";
  while (text.size() <= 1024 * 1024) text += comment;
  auto big = write("big.yaml", text);
  auto size = std::to_string(text.size());
  EXPECT_EQ(bounded_load(big), big.string() + ":1:1: this file is " + size +
                                   " bytes; the limit is 1048576 bytes (1 MiB) per file");
  auto f = write("main.yaml", "include: [big.yaml]\n");
  EXPECT_EQ(bounded_load(f), f.string() + ":1:11: include[0]: '" + big.string() + "' is " + size +
                                 " bytes; the limit is 1048576 bytes (1 MiB) per file");
}

// The limits bound the work only if no step is quadratic: 40,000 unique items used to take
// seconds (uniqueItems compared every pair), 100,000 minutes.
TEST_F(load_test, a_large_config_loads_quickly) {
  std::string text = "mode: gateway\ngateway:\n  interfaces: [";
  for (int i = 0; i < 40000; ++i) text += (i ? ", i" : "i") + std::to_string(i);
  text += "]\nprofiles:\n";
  for (int i = 0; i < 1500; ++i)
    text += "  p" + std::to_string(i) + ": {host: h, subnets: [10." + std::to_string(i / 256) +
            "." + std::to_string(i % 256) + ".0/24]}\n";
  auto f = write("large.yaml", text);
  EXPECT_EQ(bounded_load(f), "");
}

// Issue 9, point 10: two listeners on one port passed `check` and failed at run time.
TEST_F(load_test, listen_ports_must_differ_and_the_error_names_both) {
  write("inc/ports.yaml", "listen:\n  tcp_port: 1053\n");
  auto f =
      write("main.yaml",
            "include: [inc/ports.yaml]\nlisten:\n  dns_port: 1053\nprofiles:\n  a: {host: h}\n");
  EXPECT_EQ(error_of(f), f.string() + ":3:13: listen.dns_port: 1053 is also listen.tcp_port (" +
                             (tmp_ / "inc/ports.yaml").string() +
                             ":2:13); the TCP and DNS listeners need different ports (0 picks "
                             "a free one)");
  auto zero = write("zero.yaml", "listen: {tcp_port: 0, dns_port: 0}\nprofiles:\n  a: {host: h}\n");
  EXPECT_EQ(error_of(zero), "");
}

// Issue 9, point 9, in the loader: the error is at the list entry, which may be in defaults,
// and the profile's own arguments run into those of defaults as ssh sees them.
TEST_F(load_test, refused_ssh_args_are_errors_at_their_entry) {
  auto f = write("d.yaml",
                 "defaults:\n  ssh_args: [-F, cfg, -oControlPersist=yes]\nprofiles:\n"
                 "  a: {host: h, ssh_args: [-i, key]}\n");
  EXPECT_EQ(error_of(f), f.string() +
                             ":2:23: defaults.ssh_args[2]: '-oControlPersist=yes' sets "
                             "ControlPersist, which keeps the master running in the background, "
                             "out of tprosshy's supervision; remove it");
  auto g = write("e.yaml",
                 "defaults:\n  ssh_args: ['ControlMaster auto']\nprofiles:\n"
                 "  a: {host: h, ssh_args: [-C, -o]}\n");
  EXPECT_EQ(error_of(g), g.string() +
                             ":2:14: defaults.ssh_args[0]: '-o ControlMaster auto' sets "
                             "ControlMaster, which tprosshy sets itself (every tunnel is a "
                             "ControlMaster on a private socket); remove it");
  // ${VAR} is expanded first: ssh sees the value.
  setenv("TPROSSHY_TEST_FLAGS", "-Nf", 1);
  auto h = write("h.yaml", "profiles:\n  a: {host: h, ssh_args: ['${TPROSSHY_TEST_FLAGS}']}\n");
  EXPECT_EQ(error_of(h), h.string() +
                             ":2:27: profiles.a.ssh_args[0]: '-Nf' holds -f, which makes ssh "
                             "fork into the background after logging in, out of tprosshy's "
                             "supervision; remove it");
  unsetenv("TPROSSHY_TEST_FLAGS");
}

TEST_F(load_test, host_keys_take_public_keys_and_known_hosts_lines) {
  const std::string key = "AAAAC3NzaC1lZDI1NTE5AAAAIJ3Xl0dnVcOo7OaRr+VYgXUg4K1pmP8PSMEi/7PLMBxs";
  auto f = write("k.yaml",
                 "profiles:\n  a:\n    host: h\n    host_keys:\n"
                 "      - ssh-ed25519 " +
                     key +
                     " me@laptop\n"
                     "      - '|1|abc=|def= ecdsa-sha2-nistp256 " +
                     key +
                     "'\n"
                     "      - 'bastion,10.0.0.1  ssh-rsa\t" +
                     key + "'\n");
  auto c = config::load(f);
  EXPECT_EQ(c.profiles.at(0).host_keys,
            (std::vector<std::string>{"ssh-ed25519 " + key, "ecdsa-sha2-nistp256 " + key,
                                      "ssh-rsa " + key}));
  auto g = write("kb.yaml",
                 "profiles:\n  a:\n    host: h\n    host_keys:\n"
                 "      - ssh-ed25519 " +
                     key +
                     "\n      - ssh-ed25519 not*base64\n"
                     "      - 'AAAA " +
                     key + "'\n      - ssh-ed25519\n");
  const auto errors = error_of(g);
  EXPECT_NE(errors.find(g.string() + ":6:9: profiles.a.host_keys[1]: the key after ssh-ed25519 is "
                                     "not base64"),
            std::string::npos)
      << errors;
  EXPECT_NE(errors.find(g.string() + ":7:9: profiles.a.host_keys[2]: is not a public key or a "
                                     "known_hosts line"),
            std::string::npos)
      << errors;
  EXPECT_NE(errors.find(g.string() + ":8:9: profiles.a.host_keys[3]: 'ssh-ed25519' has no key "
                                     "after it"),
            std::string::npos)
      << errors;
}

// Issue 12 (a): every mistake at once, in file order, each at its place; one mistake that
// shows through several checks is reported once.
TEST_F(load_test, every_error_at_once_in_file_order) {
  write("inc/team.yaml",
        "profiles:\n"
        "  team:\n"
        "    host: team\n"
        "    subnets: [10.1.0.0/33]\n"
        "    dns: {learn_routes: maybe}\n");
  auto f = write("main.yaml",
                 "include: [inc/team.yaml]\n"
                 "listen: {tcp_port: 70000}\n"
                 "mode: local\n"
                 "exclude: [192.168.0.0/16, 10.0.0.1/8]\n"
                 "profiles:\n"
                 "  corp:\n"
                 "    host: bastion\n"
                 "    enabled: yes\n"
                 "    ssh_args: [-f]\n"
                 "  other:\n"
                 "    hots: x\n");
  fs::current_path(tmp_);
  try {
    load("main.yaml");
    FAIL() << "no exception";
  } catch (const config::errors& e) {
    EXPECT_EQ(std::string(e.what()),
              "main.yaml:2:20: listen.tcp_port: 70000 is out of range (0-65535)\n"
              "main.yaml:4:27: exclude[1]: '10.0.0.1/8' has host bits set; did you mean "
              "10.0.0.0/8?\n"
              "main.yaml:8:14: profiles.corp.enabled: expected true or false, got string 'yes' "
              "(write true or false)\n"
              "main.yaml:9:16: profiles.corp.ssh_args[0]: '-f' makes ssh fork into the "
              "background after logging in, out of tprosshy's supervision; remove it\n"
              "main.yaml:11:5: profiles.other.hots: unknown key 'hots' (did you mean 'host'?)\n"
              "inc/team.yaml:4:15: profiles.team.subnets[0]: '10.1.0.0/33' has an invalid prefix "
              "length (0-32)\n"
              "inc/team.yaml:5:25: profiles.team.dns.learn_routes: expected true or false, got "
              "string 'maybe'");
    ASSERT_EQ(e.all().size(), 7u);
    EXPECT_EQ(e.where().to_string(), "main.yaml:2:20");
    EXPECT_EQ(e.message(), "listen.tcp_port: 70000 is out of range (0-65535)");
    EXPECT_FALSE(e.more());
  }
}

TEST_F(load_test, at_most_twenty_errors_then_where_the_next_one_is) {
  std::string text = "profiles:\n";
  for (int i = 0; i < 25; ++i) text += "  p" + std::to_string(i) + ": {host: h, enabled: 1}\n";
  auto f = write("many.yaml", text);
  try {
    load(f);
    FAIL() << "no exception";
  } catch (const config::errors& e) {
    ASSERT_EQ(e.all().size(), 20u);
    for (int i = 0; i < 20; ++i)
      EXPECT_EQ(e.all()[i].what(), f.string() + ":" + std::to_string(i + 2) +
                                       (i < 10 ? ":26" : ":27") + ": profiles.p" +
                                       std::to_string(i) +
                                       ".enabled: expected true or false, got integer 1")
          << i;
    ASSERT_TRUE(e.more());
    EXPECT_EQ(e.more()->to_string(), f.string() + ":22:27");
    std::string what = e.what();
    EXPECT_EQ(std::count(what.begin(), what.end(), '\n'), 20);
    EXPECT_THAT(what, testing::EndsWith("\n" + f.string() +
                                        ":22:27: more errors from here on (at most 20 are "
                                        "reported at once)"));
  }
}

TEST_F(load_test, a_fatal_error_stops_the_load_and_comes_with_those_before_it) {
  // Syntax stops a file: nothing after it in that file is looked at.
  auto syntax = write("syntax.yaml", "mode: nope\nprofiles: {a: {host: h}\nlog: {level: x}\n");
  try {
    load(syntax);
    FAIL() << "no exception";
  } catch (const config::errors&) {
    FAIL() << "a syntax error alone is a single config::error";
  } catch (const config::error& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr("YAML syntax error"));
  }
  // An include that cannot be read stops the load; what was found before it is reported too.
  auto f = write("main.yaml",
                 "include: [nope.yaml]\nmode: nope\nprofiles:\n  a: {host: h, enabled: 1}\n");
  try {
    load(f);
    FAIL() << "no exception";
  } catch (const config::errors& e) {
    EXPECT_EQ(std::string(e.what()),
              f.string() + ":1:11: include[0]: cannot read '" + (tmp_ / "nope.yaml").string() +
                  "': No such file or directory\n" + f.string() +
                  ":2:7: mode: 'nope' is not one of local, gateway\n" + f.string() +
                  ":4:25: profiles.a.enabled: expected true or false, got integer 1");
  }
}

// Issue 12 (b): include takes glob patterns, expanded in byte order.
TEST_F(load_test, include_globs_expand_in_sorted_order) {
  for (auto [file, profile] : {std::pair{"9.yaml", "p9"}, std::pair{"10.yaml", "p10"},
                               std::pair{"a.yaml", "pa"}, std::pair{"B.yaml", "pbig"}})
    write(std::string("sub/conf.d/") + file,
          std::string("profiles:\n  ") + profile + ": {host: h}\n");
  write("sub/conf.d/c.yml", "profiles:\n  not-yaml: {host: h}\n");       // not *.yaml
  write("sub/conf.d/.hidden.yaml", "profiles:\n  hidden: {host: h}\n");  // * skips dot files
  write("sub/conf.d/deeper/d.yaml", "profiles:\n  deeper: {host: h}\n");
  write("sub/main.yaml",
        "include: [conf.d/*.yaml, empty.d/*.yaml, 'conf.d/[9]*.yaml']\nprofiles:\n  mine: {host: "
        "h}\n");
  fs::current_path(tmp_);
  auto c = load("sub/main.yaml");
  std::vector<std::string> names, files;
  for (auto& p : c.profiles) {
    names.push_back(p.name);
    files.push_back(p.where.file);
  }
  EXPECT_THAT(names, ElementsAre("p10", "p9", "pbig", "pa", "mine"));
  EXPECT_THAT(files, ElementsAre("sub/conf.d/10.yaml", "sub/conf.d/9.yaml", "sub/conf.d/B.yaml",
                                 "sub/conf.d/a.yaml", "sub/main.yaml"));
  // A matched file's mistakes name it like any other include.
  write("sub/conf.d/zz.yaml", "profiles:\n  z: {host: h, subnet: []}\n");
  EXPECT_EQ(error_of("sub/main.yaml"),
            "sub/conf.d/zz.yaml:2:16: profiles.z.subnet: unknown key 'subnet' (did you mean "
            "'subnets'?)");
  // A plain path that does not exist is still a mistake.
  write("sub/plain.yaml", "include: [conf.d/nope.yaml]\nprofiles:\n  mine: {host: h}\n");
  EXPECT_EQ(error_of("sub/plain.yaml"),
            "sub/plain.yaml:1:11: include[0]: cannot read 'sub/conf.d/nope.yaml': No such file "
            "or directory");
}

// Issue 12 (c): the effective configuration, with where each value comes from.
void expect_same(const config::config& a, const config::config& b) {
  EXPECT_EQ(a.mode, b.mode);
  EXPECT_EQ(a.gateway_interfaces, b.gateway_interfaces);
  EXPECT_EQ(a.listen_address, b.listen_address);
  EXPECT_EQ(a.tcp_port, b.tcp_port);
  EXPECT_EQ(a.dns_port, b.dns_port);
  EXPECT_EQ(a.dns_upstream, b.dns_upstream);
  EXPECT_EQ(a.capture, b.capture);
  EXPECT_EQ(a.cache_size, b.cache_size);
  EXPECT_EQ(a.on_start_failure, b.on_start_failure);
  EXPECT_EQ(a.exclude, b.exclude);
  EXPECT_EQ(a.log_level, b.log_level);
  ASSERT_EQ(a.profiles.size(), b.profiles.size());
  for (std::size_t i = 0; i < a.profiles.size(); ++i) {
    auto &p = a.profiles[i], &q = b.profiles[i];
    EXPECT_EQ(p.name, q.name);
    EXPECT_EQ(p.host, q.host) << p.name;
    EXPECT_EQ(p.ssh_args, q.ssh_args) << p.name;
    EXPECT_EQ(p.subnets, q.subnets) << p.name;
    EXPECT_EQ(p.exclude, q.exclude) << p.name;
    EXPECT_EQ(p.dns.domains, q.dns.domains) << p.name;
    EXPECT_EQ(p.dns.nameserver, q.dns.nameserver) << p.name;
    EXPECT_EQ(p.dns.learn_routes, q.dns.learn_routes) << p.name;
    EXPECT_EQ(p.enabled, q.enabled) << p.name;
  }
}

TEST_F(load_test, effective_yaml_shows_where_each_value_comes_from) {
  auto dir = source_dir / "tests/unit/data/config/effective";
  fs::current_path(dir);
  std::string got = config::effective_yaml("main.yaml");
  // The default control socket is the running user's: the golden file has root's.
  const std::string mine = "socket: " + config::default_control_socket() + "  # default\n";
  if (auto at = got.find(mine); at != std::string::npos)
    got.replace(at, mine.size(), "socket: /run/tprosshy/control.sock  # default\n");
  auto golden = dir / "main.effective.yaml";
  if (std::getenv("TPROSSHY_UPDATE_GOLDEN")) std::ofstream(golden) << got;
  std::ifstream in(golden);
  std::string want((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(got, want);
  // It is a config in its own right, and the same one.
  expect_same(load(write("effective.yaml", got)), load("main.yaml"));
  // Every key of the schema that has a default shows up in the smallest config.
  auto minimal = config::effective_yaml(good_dir / "minimal.yaml");
  for (auto line :
       {"mode: local  # default", "  tcp_port: 0  # default", "  dns_port: 0  # default",
        "    - system  # default", "  capture: resolvers  # default",
        "  cache_size: 10000  # default", "on_start_failure: exit  # default",
        "  level: info  # default", "      nameserver: auto  # default",
        "      learn_routes: true  # default", "    enabled: true  # default"})
    EXPECT_THAT(minimal, testing::HasSubstr(std::string("\n") + line + "\n"));
  expect_same(load(write("minimal.yaml", minimal)), load(good_dir / "minimal.yaml"));
  // A config that does not load has no effective form: the same error.
  EXPECT_THROW(config::effective_yaml(source_dir / "tests/unit/data/config/bad/host_bits.yaml"),
               config::error);
}

TEST(endpoint, parses_the_documented_forms) {
  auto e = config::parse_endpoint("10.0.0.53");
  ASSERT_TRUE(e);
  EXPECT_FALSE(e->port);
  EXPECT_EQ(e->to_string(), "10.0.0.53");
  e = config::parse_endpoint("10.0.0.53:5353");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->port, 5353);
  e = config::parse_endpoint("[fd00::53]:53");
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->address.is_v6());
  EXPECT_EQ(e->to_string(), "[fd00::53]:53");
  EXPECT_EQ(config::parse_endpoint("fd00::53")->to_string(), "fd00::53");
  for (auto bad : {"", "auto", "10.0.0.53:", "10.0.0.53:0", "10.0.0.53:65536", "[10.0.0.1]:53",
                   "[fd00::53", "[fd00::53]53", "fd00::53:x", "host:53", "10.0.0:53"})
    EXPECT_FALSE(config::parse_endpoint(bad)) << bad;
}

TEST(schema, rejects_keywords_it_does_not_implement) {
  auto doc = config::detail::parse(R"({"type": "object", "oneOf": []})", "s.json",
                                   {.expand = false, .env = {}});
  EXPECT_THROW(config::detail::schema{doc}, std::logic_error);
  EXPECT_NO_THROW(config::detail::schema::builtin());
}

// The schema's patterns (and the YAML and ${VAR} grammars) are matched by hand-written code,
// never by std::regex on config input. Here, on short strings only, std::regex is the
// reference they must agree with.
TEST(schema, hand_written_matchers_agree_with_the_patterns) {
  std::vector<std::string> samples = {"eth0",
                                      "br-lan",
                                      "wlan0.5",
                                      "eth/1",
                                      "eth:1",
                                      "e th",
                                      "123456789012345",
                                      "1234567890123456",
                                      "corp.example.com",
                                      "corp.example.com.",
                                      "a..b",
                                      ".a",
                                      "a.",
                                      "..",
                                      "ssh://u@h:22",
                                      "user@host",
                                      "-oProxyCommand=x",
                                      "h\n",
                                      "h\t",
                                      "\vh",
                                      "h\r",
                                      std::string(32, 'a'),
                                      std::string(33, 'a'),
                                      "+12",
                                      "-1.5e+3",
                                      "1.",
                                      ".5",
                                      "1e",
                                      "e1",
                                      "1.2.3",
                                      "0x1F",
                                      "_x",
                                      "X_1",
                                      "1x",
                                      "a-b",
                                      "5s",
                                      "500ms",
                                      "300",
                                      "1h",
                                      "2m",
                                      "5 s",
                                      "5sec",
                                      "s",
                                      "1234567890s",
                                      "123456789s",
                                      "tprosshy-ssh",
                                      "_svc.1",
                                      std::string(32, 's'),
                                      "9svc",
                                      "Svc"};
  const std::string alphabet = {'a', 'Z', '0', '9', '_',  '-',  '.',  '/',
                                ':', '+', 'e', ' ', '\t', '\n', '\v', '\xc3'};
  for (char a : alphabet) {
    samples.push_back(std::string(1, a));
    for (char b : alphabet) {
      samples.push_back(std::string{a, b});
      for (char c : alphabet) samples.push_back(std::string{a, b, c});
    }
  }
  samples.push_back("");

  std::vector<std::string> patterns;
  auto walk = [&](auto& self, const config::detail::node& n) -> void {
    for (auto& e : n.entries) {
      if (e.key == "pattern") patterns.push_back(e.value.text);
      self(self, e.value);
    }
    for (auto& i : n.items) self(self, i);
  };
  walk(walk, config::detail::schema::builtin().document());
  ASSERT_EQ(patterns.size(), 7u);  // a new pattern needs a matcher and a look here
  for (auto& p : patterns) {
    auto match = config::detail::pattern_matcher(p);
    std::regex re(p);
    for (auto& t : samples)
      EXPECT_EQ(match(t), std::regex_search(t, re)) << p << " on '" << t << "'";
  }
  std::regex name("[A-Za-z_][A-Za-z0-9_]*"), integer("[-+]?[0-9]+"),
      number("[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?");
  for (auto& t : samples) {
    EXPECT_EQ(config::detail::is_env_name(t), std::regex_match(t, name)) << t;
    EXPECT_EQ(config::detail::is_yaml_integer(t), std::regex_match(t, integer)) << t;
    EXPECT_EQ(config::detail::is_yaml_number(t), std::regex_match(t, number)) << t;
  }
  EXPECT_THROW(config::detail::pattern_matcher("^a+$"), std::logic_error);
}

TEST(schema, suggests_close_keys_only) {
  EXPECT_EQ(config::detail::closest("subnet", {"host", "subnets", "exclude"}), "subnets");
  EXPECT_EQ(config::detail::closest("zzzzzz", {"host", "subnets"}), std::nullopt);
  EXPECT_EQ(config::detail::edit_distance("listn", "listen"), 1u);
}

// The example is documentation: it must load, and it must show every key of the schema.
TEST_F(load_test, example_loads_and_uses_every_key) {
  auto c = load(source_dir / "config/example.yaml");
  ASSERT_GE(c.profiles.size(), 2u);
  EXPECT_EQ(c.profiles[0].name, "team-lab");  // from example-team.yaml
  EXPECT_EQ(c.profiles[1].host, "corp-bastion.example.com");
  EXPECT_THAT(c.profiles[1].ssh_args,
              ElementsAre("-i", "/home/tester/.ssh/corp", "-o",
                          "CertificateFile=/home/tester/.ssh/corp-cert.pub", "-F",
                          "/home/tester/.ssh/config", "-o", "ConnectTimeout=10"));

  using config::detail::node;
  std::set<std::string> used;
  auto collect = [&](auto& self, const node& n) -> void {
    for (auto& e : n.entries) {
      used.insert(e.key);
      self(self, e.value);
    }
    for (auto& i : n.items) self(self, i);
  };
  for (auto name : {"config/example.yaml", "config/example-team.yaml"}) {
    std::ifstream in(source_dir / name);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    collect(collect, config::detail::parse(text, name));
  }
  std::set<std::string> defined;
  auto walk = [&](auto& self, const node& s) -> void {
    for (auto& e : s.entries) {
      if (e.key == "properties")
        for (auto& p : e.value.entries) defined.insert(p.key);
      if (e.value.type == config::detail::kind::map) self(self, e.value);
    }
  };
  walk(walk, config::detail::schema::builtin().document());
  for (auto& key : defined) EXPECT_TRUE(used.contains(key)) << "example.yaml does not show " << key;
}

}  // namespace
