// nft::netlink against the real kernel, inside this binary's own network namespace
// (tests/netns/main.cpp). /usr/sbin/nft reads back what the kernel holds.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <tuple>

#include "../unit/nft_samples.hpp"
#include "nft/netlink.hpp"
#include "nft/ruleset.hpp"

namespace tprosshy::nft {
namespace {

// From <linux/netfilter_ipv6/ip6_tables.h>, which clashes with <net/if.h> (via Asio).
constexpr int IP6T_SO_ORIGINAL_DST = 80;

struct run_result {
  int status;
  std::string out;
};

run_result run(const std::string& cmd) {
  run_result r{-1, {}};
  FILE* f = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return r;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, f)) > 0;) r.out.append(buf, n);
  r.status = ::pclose(f);
  return r;
}

void sh(const std::string& cmd) {
  auto r = run(cmd);
  ASSERT_EQ(r.status, 0) << cmd << ": " << r.out;
}

std::string raw_listing(const std::string& table) {
  auto r = run("nft list table inet " + table);
  return r.status == 0 ? r.out : "<no table " + table + ": " + r.out + ">";
}

// The table as the kernel holds it, with its name and ownership (which `nft -f` cannot
// give) taken out so two tables compare.
std::string listing(const std::string& table) {
  auto out = std::regex_replace(raw_listing(table),
                                std::regex("table inet " + table + " \\{( # progname [^\n]*)?"),
                                "table inet T {");
  return std::regex_replace(out, std::regex("\tflags owner\n\n"), "");
}

bool table_exists(const std::string& table) {
  return run("nft list tables").out.find("table inet " + table + "\n") != std::string::npos;
}

void install_text(ruleset r, const std::string& table) {
  r.table = table;
  std::string path = "/tmp/tprosshy_nft_test_" + std::to_string(::getpid()) + ".nft";
  std::ofstream(path) << render(r);
  auto res = run("nft -f " + path);
  ::unlink(path.c_str());
  ASSERT_EQ(res.status, 0) << "nft -f rejected render():\n" << res.out << "\n" << render(r);
}

class nft_netlink : public testing::Test {
 protected:
  void SetUp() override { run("nft flush ruleset"); }
  void TearDown() override { run("nft flush ruleset"); }
};

TEST_F(nft_netlink, installs_what_render_prints) {
  netlink nl;
  for (const auto& [name, r] : samples::all()) {
    SCOPED_TRACE(name);
    if (r.lock == lock_mode::on) continue;  // lock_installs_what_render_prints
    nl.install(r);
    install_text(r, "tp_text");
    auto got = listing("tprosshy");
    EXPECT_EQ(got, listing("tp_text"));
    EXPECT_NE(raw_listing("tprosshy").find("\tflags owner\n"), std::string::npos);
    EXPECT_NE(got.find("redirect to :"), std::string::npos) << got;
    run("nft delete table inet tp_text");
  }
}

TEST_F(nft_netlink, large_sets_span_several_messages) {
  ruleset r = samples::local_one_profile();
  // 3000 separate hosts: 6000 interval elements, more than one netlink message holds.
  for (uint32_t i = 0; i < 3000; ++i) {
    auto a = net::from_u128(net::to_u128(samples::ip("198.18.0.0")) + 2 * i, true);
    r.profiles[0].v4.push_back({a, a});
  }
  netlink nl;
  nl.install(r);
  install_text(r, "tp_text");
  auto got = listing("tprosshy");
  EXPECT_EQ(got, listing("tp_text"));
  EXPECT_NE(got.find("198.18.23.110"), std::string::npos);  // the last one: 198.18.0.0 + 5998
}

TEST_F(nft_netlink, install_twice_replaces) {
  netlink nl;
  nl.install(samples::two_profiles());
  nl.install(samples::local_one_profile());
  auto tables = run("nft list tables").out;
  EXPECT_EQ(tables, "table inet tprosshy\n");
  install_text(samples::local_one_profile(), "tp_text");
  EXPECT_EQ(listing("tprosshy"), listing("tp_text"));
}

TEST_F(nft_netlink, renamed_table_replaces_the_old_one) {
  netlink nl;
  nl.install(samples::local_one_profile());
  auto renamed = samples::local_one_profile();
  renamed.table = "tprosshy_b";
  nl.install(renamed);
  EXPECT_EQ(run("nft list tables").out, "table inet tprosshy_b\n");
}

TEST_F(nft_netlink, replaces_a_leftover_table_nobody_owns) {
  install_text(samples::two_profiles(), "tprosshy");
  netlink nl;
  nl.install(samples::gateway());
  install_text(samples::gateway(), "tp_text");
  EXPECT_EQ(listing("tprosshy"), listing("tp_text"));
}

TEST_F(nft_netlink, failed_install_changes_nothing) {
  netlink nl;
  nl.install(samples::two_profiles());
  auto before = listing("tprosshy");

  // The kernel refuses set names over 255 bytes: the batch fails midway and is undone.
  auto bad = samples::local_one_profile();
  bad.profiles.push_back({std::string(300, 'x'), {samples::cidr("198.18.7.0/24")}, {}, false});
  try {
    nl.install(bad);
    FAIL() << "install of an over-long set name succeeded";
  } catch (const std::system_error& e) {
    EXPECT_NE(std::string(e.what()).find("set route4_xxx"), std::string::npos) << e.what();
  }
  EXPECT_EQ(listing("tprosshy"), before);

  auto bad_if = samples::gateway();
  bad_if.interfaces.push_back("a-name-far-too-long");
  try {
    nl.install(bad_if);
    FAIL() << "install with a 19-character interface name succeeded";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EINVAL);
  }
  EXPECT_EQ(listing("tprosshy"), before);
}

TEST_F(nft_netlink, table_lives_as_long_as_the_object) {
  {
    netlink nl;
    nl.install(samples::local_one_profile());
    ASSERT_TRUE(table_exists("tprosshy"));
    // Another socket may not take the table over.
    netlink other;
    try {
      other.install(samples::two_profiles());
      FAIL() << "a second socket replaced an owned table";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code().value(), EPERM) << e.what();
    }
  }
  EXPECT_FALSE(table_exists("tprosshy")) << run("nft list ruleset").out;
}

TEST_F(nft_netlink, learn_adds_expiring_elements) {
  netlink nl;
  nl.install(samples::two_profiles());
  nl.learn("corp", samples::ip("198.18.50.1"), std::chrono::seconds(300));
  nl.learn("corp", samples::ip("fd00:50::1"), std::chrono::seconds(60));
  auto v4 = run("nft list set inet tprosshy learn4_corp").out;
  EXPECT_TRUE(std::regex_search(v4, std::regex(R"(198\.18\.50\.1 timeout 5m expires )"))) << v4;
  auto v6 = run("nft list set inet tprosshy learn6_corp").out;
  EXPECT_TRUE(std::regex_search(v6, std::regex(R"(fd00:50::1 timeout 1m expires )"))) << v6;

  // Learning again refreshes the timeout rather than failing or duplicating.
  nl.learn("corp", samples::ip("198.18.50.1"), std::chrono::seconds(7200));
  v4 = run("nft list set inet tprosshy learn4_corp").out;
  EXPECT_TRUE(std::regex_search(v4, std::regex(R"(198\.18\.50\.1 timeout 2h expires )"))) << v4;

  EXPECT_THROW(nl.learn("lab-2", samples::ip("198.18.50.2"), std::chrono::seconds(60)),
               std::system_error);

  // A learn can take another address out in the same batch (dns.learn_limit), present or
  // not (expired already).
  nl.learn("corp", samples::ip("198.18.50.3"), std::chrono::seconds(60),
           samples::ip("198.18.50.1"));
  v4 = run("nft list set inet tprosshy learn4_corp").out;
  EXPECT_EQ(v4.find("198.18.50.1 "), std::string::npos) << v4;
  EXPECT_NE(v4.find("198.18.50.3 "), std::string::npos) << v4;
  nl.learn("corp", samples::ip("198.18.50.4"), std::chrono::seconds(60), samples::ip("fd00:50::9"));
  v6 = run("nft list set inet tprosshy learn6_corp").out;
  EXPECT_NE(v6.find("fd00:50::1 "), std::string::npos) << v6;
}

TEST_F(nft_netlink, remove_deletes_the_table) {
  netlink nl;
  nl.remove();  // nothing installed yet: nothing to do
  nl.install(samples::two_profiles());
  nl.remove();
  EXPECT_FALSE(table_exists("tprosshy"));
  nl.remove();
  nl.install(samples::local_one_profile());
  EXPECT_TRUE(table_exists("tprosshy"));
}

// --- lockdown: the lock table --------------------------------------------------------

TEST_F(nft_netlink, lock_installs_what_render_prints) {
  for (const char* name : {"lockdown", "lockdown_gateway"}) {
    SCOPED_TRACE(name);
    const auto r = samples::all().at(name);
    std::string main, lock;
    {
      netlink nl;
      nl.install(r);
      main = listing("tprosshy");
      lock = raw_listing("tprosshy_lock");
      EXPECT_EQ(lock.find("flags owner"), std::string::npos) << lock;
    }
    run("nft flush ruleset");
    std::string path = "/tmp/tprosshy_nft_test_" + std::to_string(::getpid()) + ".nft";
    std::ofstream(path) << render(r);
    auto res = run("nft -f " + path);
    ::unlink(path.c_str());
    ASSERT_EQ(res.status, 0) << res.out << "\n" << render(r);
    EXPECT_EQ(main, listing("tprosshy"));
    EXPECT_EQ(lock, raw_listing("tprosshy_lock"));
    EXPECT_NE(lock.find("reject with tcp reset comment \"corp: tcp refused\""), std::string::npos)
        << lock;
    run("nft flush ruleset");
  }
}

TEST_F(nft_netlink, lock_outlives_its_installer_and_the_next_install_replaces_it) {
  {
    netlink nl;
    nl.install(samples::lockdown());
  }
  EXPECT_FALSE(table_exists("tprosshy"));
  ASSERT_TRUE(table_exists("tprosshy_lock")) << run("nft list ruleset").out;
  EXPECT_NE(raw_listing("tprosshy_lock").find("route4_corp"), std::string::npos);

  // A new run adopts it: replaced with its own ruleset's, in the same batch as its table.
  auto next = samples::local_one_profile();
  next.lock = lock_mode::on;
  netlink nl;
  nl.install(next);
  auto lock = raw_listing("tprosshy_lock");
  EXPECT_EQ(lock.find("lab-2"), std::string::npos) << lock;
  EXPECT_NE(lock.find("route4_corp"), std::string::npos) << lock;

  // A user's table (lock_mode::leave) leaves root's lock alone.
  auto user = samples::refusing_confined();
  user.table = "tprosshy_u1000";
  netlink other;
  other.install(user);
  EXPECT_TRUE(table_exists("tprosshy_lock"));

  // Turned off, it goes, with the main table still standing.
  next.lock = lock_mode::off;
  nl.install(next);
  EXPECT_FALSE(table_exists("tprosshy_lock"));
  EXPECT_TRUE(table_exists("tprosshy"));
  nl.install(next);  // off and already gone: nothing to do, no error
}

TEST_F(nft_netlink, lock_learns_with_the_main_table_and_goes_with_remove) {
  netlink nl;
  nl.install(samples::lockdown());
  nl.learn("corp", samples::ip("198.18.50.1"), std::chrono::seconds(300));
  for (const char* table : {"tprosshy", "tprosshy_lock"}) {
    auto v4 = run(std::string("nft list set inet ") + table + " learn4_corp").out;
    EXPECT_TRUE(std::regex_search(v4, std::regex(R"(198\.18\.50\.1 timeout 5m expires )")))
        << table << ": " << v4;
  }
  nl.learn("corp", samples::ip("198.18.50.2"), std::chrono::seconds(60),
           samples::ip("198.18.50.1"));
  auto lock = run("nft list set inet tprosshy_lock learn4_corp").out;
  EXPECT_EQ(lock.find("198.18.50.1 "), std::string::npos) << lock;
  EXPECT_NE(lock.find("198.18.50.2 "), std::string::npos) << lock;
  nl.remove();
  EXPECT_EQ(run("nft list tables").out, "");
}

TEST_F(nft_netlink, describe_counts_a_tables_sets_and_drop_deletes_it) {
  netlink nl;
  nl.install(samples::lockdown());
  nl.learn("corp", samples::ip("198.18.50.1"), std::chrono::seconds(300));
  netlink reader;
  EXPECT_FALSE(reader.describe("no_such_table").exists);
  const auto main = reader.describe("tprosshy");
  EXPECT_TRUE(main.exists);
  EXPECT_TRUE(main.owned);
  EXPECT_NE(main.owner, 0u);
  const auto lock = reader.describe("tprosshy_lock");
  EXPECT_TRUE(lock.exists);
  EXPECT_FALSE(lock.owned);
  std::map<std::string, std::size_t> sets(lock.sets.begin(), lock.sets.end());
  EXPECT_EQ(sets["route4_corp"], 2u);  // 10.20.0.0/16 and 172.16.0.0/12
  EXPECT_EQ(sets["learn4_corp"], 1u);
  EXPECT_EQ(sets["resolvers4"], 2u);  // 127.0.0.53 once, 198.18.0.53
  EXPECT_EQ(sets["route6_lab-2"], 1u);
  EXPECT_EQ(lock.refused, (std::map<std::string, uint64_t>{{"corp", 0}, {"lab-2", 0}}));
  // The learned addresses, with the time they have left, for a next run to adopt.
  ASSERT_EQ(lock.learned.count("corp"), 1u);
  ASSERT_EQ(lock.learned.at("corp").size(), 1u);
  EXPECT_EQ(lock.learned.at("corp")[0].address, samples::ip("198.18.50.1"));
  EXPECT_GT(lock.learned.at("corp")[0].ttl.count(), 290);
  EXPECT_LE(lock.learned.at("corp")[0].ttl.count(), 300);
  reader.drop("tprosshy_lock");
  EXPECT_FALSE(table_exists("tprosshy_lock"));
  EXPECT_TRUE(table_exists("tprosshy"));
  reader.drop("tprosshy_lock");  // gone already: fine
}

TEST_F(nft_netlink, skuid_rules_are_accepted_and_listed) {
  auto r = samples::two_profiles();
  r.skuid = 65534;
  netlink nl;
  nl.install(r);
  install_text(r, "tp_text");
  auto got = listing("tprosshy");
  EXPECT_EQ(got, listing("tp_text"));
  // nft prints a uid it finds in /etc/passwd by name.
  EXPECT_TRUE(std::regex_search(
      got, std::regex("meta skuid (65534|\"nobody\") ip daddr @route4_corp meta l4proto tcp")))
      << got;
}

TEST_F(nft_netlink, without_cap_net_admin_throws_eperm) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    if (::syscall(SYS_capset, &hdr, data) != 0) ::_exit(2);
    try {
      netlink nl;
      ::_exit(3);
    } catch (const std::system_error& e) {
      ::_exit(e.code().value() == EPERM ? 0 : 4);
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: capset failed, 3: no error, 4: not EPERM";
}

// --- traffic really goes where the rules say -----------------------------------------

struct fd_guard {
  int fd = -1;
  explicit fd_guard(int f) : fd(f) {}
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

// A listener on loopback; returns its port.
uint16_t listen_on(int fd, const char* addr, bool v6) {
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss{};
  socklen_t len;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    ::inet_pton(AF_INET6, addr, &a->sin6_addr);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    ::inet_pton(AF_INET, addr, &a->sin_addr);
    len = sizeof *a;
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) return 0;
  if (::listen(fd, 8) != 0) return 0;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                  : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

// Connects (non-blocking) and returns the accepted socket if the listener got it in time.
std::optional<int> connect_and_accept(int listener, const char* addr, uint16_t port, bool v6,
                                      int wait_ms) {
  int c = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  fd_guard cg(c);
  sockaddr_storage ss{};
  socklen_t len;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    ::inet_pton(AF_INET6, addr, &a->sin6_addr);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    ::inet_pton(AF_INET, addr, &a->sin_addr);
    len = sizeof *a;
  }
  ::connect(c, reinterpret_cast<sockaddr*>(&ss), len);
  pollfd p{listener, POLLIN, 0};
  if (::poll(&p, 1, wait_ms) != 1) return std::nullopt;
  int a = ::accept(listener, nullptr, nullptr);
  if (a < 0) return std::nullopt;
  return a;
}

std::string original_dst(int fd, bool v6) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  int rc = v6 ? ::getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &len)
              : ::getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &len);
  if (rc != 0) return std::string("error ") + std::strerror(errno);
  char text[INET6_ADDRSTRLEN] = {};
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
    return "[" + std::string(text) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  auto* a = reinterpret_cast<sockaddr_in*>(&ss);
  ::inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
  return std::string(text) + ":" + std::to_string(ntohs(a->sin_port));
}

class nft_redirect : public nft_netlink {
 protected:
  void SetUp() override {
    nft_netlink::SetUp();
    run("ip link del d0");
    // A veth pair routes the test ranges: without the redirect nothing would answer.
    sh("ip link add d0 type veth peer name d1 && ip link set d1 up && ip link set d0 up && "
       "ip addr add 198.18.1.1/24 dev d0 && "
       "ip route add 198.18.99.0/24 dev d0 && ip -6 addr add fd00:1::1/64 dev d0 nodad && "
       "ip -6 route add fd00:99::/64 dev d0");
  }
  void TearDown() override {
    run("ip link del d0");
    nft_netlink::TearDown();
  }
};

TEST_F(nft_redirect, tcp_to_a_routed_range_reaches_the_listener) {
  for (bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "IPv6" : "IPv4");
    fd_guard l(::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0));
    uint16_t port = listen_on(l.fd, v6 ? "::1" : "127.0.0.1", v6);
    ASSERT_NE(port, 0);
    ruleset r;
    r.tcp_port = port;
    r.bypass = {{samples::ip(v6 ? "fd00:99::7" : "198.18.99.7"), 22, "lab"}};
    r.exclude = {samples::pfx(v6 ? "fd00:99:0:0:8000::/65" : "198.18.99.128/25")};
    r.profiles.push_back(
        {"lab", {samples::cidr("198.18.99.0/24")}, {samples::cidr("fd00:99::/64")}, false});
    netlink nl;
    nl.install(r);

    auto accepted = connect_and_accept(l.fd, v6 ? "fd00:99::5" : "198.18.99.5", 80, v6, 2000);
    ASSERT_TRUE(accepted) << "no redirected connection\n" << listing("tprosshy");
    fd_guard a(*accepted);
    EXPECT_EQ(original_dst(a.fd, v6), v6 ? "[fd00:99::5]:80" : "198.18.99.5:80");

    // Excluded and bypassed destinations are left alone.
    EXPECT_FALSE(
        connect_and_accept(l.fd, v6 ? "fd00:99::8000:0:0:5" : "198.18.99.200", 80, v6, 300));
    EXPECT_FALSE(connect_and_accept(l.fd, v6 ? "fd00:99::7" : "198.18.99.7", 22, v6, 300));
    // Other ports of that host still go through.
    auto other = connect_and_accept(l.fd, v6 ? "fd00:99::7" : "198.18.99.7", 23, v6, 2000);
    ASSERT_TRUE(other);
    ::close(*other);
  }
}

TEST_F(nft_redirect, learned_address_is_redirected) {
  fd_guard l(::socket(AF_INET, SOCK_STREAM, 0));
  uint16_t port = listen_on(l.fd, "127.0.0.1", false);
  ASSERT_NE(port, 0);
  ruleset r;
  r.tcp_port = port;
  r.profiles.push_back({"lab", {samples::cidr("198.18.100.0/24")}, {}, true});
  netlink nl;
  nl.install(r);
  EXPECT_FALSE(connect_and_accept(l.fd, "198.18.99.9", 443, false, 300));
  nl.learn("lab", samples::ip("198.18.99.9"), std::chrono::seconds(60));
  auto a = connect_and_accept(l.fd, "198.18.99.9", 443, false, 2000);
  ASSERT_TRUE(a);
  fd_guard g(*a);
  EXPECT_EQ(original_dst(g.fd, false), "198.18.99.9:443");
}

// A UDP socket bound to a free port of 127.0.0.1; its port, 0 when it could not bind.
uint16_t bind_udp_loopback(int fd) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return 0;
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

TEST_F(nft_redirect, dns_to_a_resolver_reaches_the_dns_port) {
  fd_guard dns(::socket(AF_INET, SOCK_DGRAM, 0));
  const uint16_t dns_port = bind_udp_loopback(dns.fd);
  ASSERT_NE(dns_port, 0);
  ruleset r;
  r.tcp_port = 1;
  r.capture_dns = true;
  r.dns_port = dns_port;
  r.resolvers = {samples::ip("198.18.99.53")};
  netlink nl;
  nl.install(r);

  fd_guard c(::socket(AF_INET, SOCK_DGRAM, 0));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(53);
  ::inet_pton(AF_INET, "198.18.99.53", &to.sin_addr);
  ASSERT_EQ(::sendto(c.fd, "q", 1, 0, reinterpret_cast<sockaddr*>(&to), sizeof to), 1);
  pollfd p{dns.fd, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 2000), 1) << "the query was not redirected";
  char b[8];
  EXPECT_EQ(::recv(dns.fd, b, sizeof b, 0), 1);
  // A different resolver is not captured.
  to.sin_addr.s_addr = htonl(ntohl(to.sin_addr.s_addr) + 1);
  ASSERT_EQ(::sendto(c.fd, "q", 1, 0, reinterpret_cast<sockaddr*>(&to), sizeof to), 1);
  EXPECT_EQ(::poll(&p, 1, 300), 0);
}

// What a non-blocking connect() to addr:port comes to within `wait_ms`: 0 (connected),
// an errno, or ETIMEDOUT when it is still pending.
int connect_outcome(const char* addr, uint16_t port, int wait_ms) {
  fd_guard c(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, addr, &a.sin_addr);
  if (::connect(c.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return 0;
  if (errno != EINPROGRESS) return errno;
  pollfd p{c.fd, POLLOUT, 0};
  if (::poll(&p, 1, wait_ms) != 1) return ETIMEDOUT;
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
  return err;
}

// A datagram to addr:port, then a short wait for the ICMP answer: 0 when nothing refused
// it, else the errno of the send or of the receive after it.
int udp_outcome(const char* addr, uint16_t port, uint32_t mark = 0) {
  fd_guard c(::socket(AF_INET, SOCK_DGRAM, 0));
  if (mark) ::setsockopt(c.fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, addr, &a.sin_addr);
  if (::connect(c.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return errno;
  if (::send(c.fd, "q", 1, 0) != 1) return errno;
  pollfd p{c.fd, POLLIN, 0};
  if (::poll(&p, 1, 300) != 1) return 0;
  char b[8];
  return ::recv(c.fd, b, sizeof b, MSG_DONTWAIT) < 0 ? errno : 0;
}

TEST_F(nft_redirect, lock_refuses_what_the_main_table_does_not_redirect) {
  fd_guard l(::socket(AF_INET, SOCK_STREAM, 0));
  const uint16_t port = listen_on(l.fd, "127.0.0.1", false);
  ASSERT_NE(port, 0);
  fd_guard dns(::socket(AF_INET, SOCK_DGRAM, 0));
  const uint16_t dns_port = bind_udp_loopback(dns.fd);
  ASSERT_NE(dns_port, 0);
  ruleset r;
  r.mark = 0x7470;
  r.tcp_port = port;
  r.capture_dns = true;
  r.dns_port = dns_port;
  r.resolvers = {samples::ip("198.18.1.53")};
  r.bypass = {{samples::ip("198.18.99.7"), 22, "lab"}};
  r.profiles.push_back({"lab", {samples::cidr("198.18.99.0/24")}, {}, false});
  r.profiles[0].refuse_other = true;
  r.lock = lock_mode::on;
  {
    netlink nl;
    nl.install(r);
    // Running: what the main table redirects passes the lock.
    auto a = connect_and_accept(l.fd, "198.18.99.5", 80, false, 2000);
    ASSERT_TRUE(a) << raw_listing("tprosshy_lock");
    ::close(*a);
    EXPECT_EQ(udp_outcome("198.18.1.53", 53), 0);
    pollfd p{dns.fd, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 2000), 1) << "the query was not redirected";
    char b[8];
    ::recv(dns.fd, b, sizeof b, 0);
    // The main table refuses (and counts) what is not TCP, before the lock sees it.
    EXPECT_EQ(nl.refused(), (std::map<std::string, uint64_t>{{"lab", 0}}));
    EXPECT_NE(udp_outcome("198.18.99.5", 443), 0);
    EXPECT_EQ(nl.refused(), (std::map<std::string, uint64_t>{{"lab", 1}}));
  }
  ASSERT_FALSE(table_exists("tprosshy"));
  // Gone: TCP gets a reset at once, the rest ICMP, DNS to the resolver too.
  EXPECT_EQ(connect_outcome("198.18.99.5", 80, 1000), ECONNREFUSED);
  const int udp = udp_outcome("198.18.99.5", 443);
  EXPECT_TRUE(udp == EPERM || udp == ECONNREFUSED) << std::strerror(udp);
  const int query = udp_outcome("198.18.1.53", 53);
  EXPECT_TRUE(query == EPERM || query == ECONNREFUSED) << std::strerror(query);
  // tprosshy's own sockets, the ssh server and what is not routed are let through.
  EXPECT_EQ(udp_outcome("198.18.1.53", 53, 0x7470), 0);
  EXPECT_EQ(connect_outcome("198.18.99.7", 22, 300), ETIMEDOUT);  // sent: nobody answers
  EXPECT_EQ(connect_outcome("198.18.1.77", 80, 300), ETIMEDOUT);
}

// --- gateway mode: who may reach the DNS port ----------------------------------------

// A host in a network namespace of its own (tpn<tag>-<pid>), joined to the test's namespace
// by a veth pair: here `dev` holds 198.18.<net>.1 and fd00:<net>::1, there the peer holds .2
// and ::2 and routes `via` (IPv4 and IPv6 prefixes) through this namespace.
class peer {
 public:
  peer(const std::string& tag, const std::string& dev, int net, const std::string& via4,
       const std::string& via6)
      : ns_("tpn" + tag + "-" + std::to_string(::getpid())), dev_(dev) {
    auto n = std::to_string(net);
    run("ip link del " + dev_ + " 2>/dev/null; ip netns del " + ns_);
    sh("ip netns add " + ns_ + " && ip link add " + dev_ + " type veth peer name p0 netns " + ns_ +
       " && ip addr add 198.18." + n + ".1/24 dev " + dev_ + " && ip -6 addr add fd00:" + n +
       "::1/64 dev " + dev_ + " nodad && ip link set " + dev_ + " up");
    sh("ip netns exec " + ns_ + " sh -c 'ip link set lo up && ip addr add 198.18." + n +
       ".2/24 dev p0 && ip -6 addr add fd00:" + n + "::2/64 dev p0 nodad && ip link set p0 up" +
       " && ip route add " + via4 + " via 198.18." + n + ".1 && ip -6 route add " + via6 +
       " via fd00:" + n + "::1'");
  }
  ~peer() { run("ip link del " + dev_ + " 2>/dev/null; ip netns del " + ns_); }
  peer(const peer&) = delete;
  peer& operator=(const peer&) = delete;

  // A socket of this host's (sockets keep the namespace they were made in).
  int socket(int family, int type) const {
    int self = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    int there = ::open(("/run/netns/" + ns_).c_str(), O_RDONLY | O_CLOEXEC);
    int fd = -1;
    if (self >= 0 && there >= 0 && ::setns(there, CLONE_NEWNET) == 0) {
      fd = ::socket(family, type, 0);
      ::setns(self, CLONE_NEWNET);
    }
    if (self >= 0) ::close(self);
    if (there >= 0) ::close(there);
    return fd;
  }

 private:
  std::string ns_, dev_;
};

sockaddr_storage sockaddr_of(const char* addr, uint16_t port, socklen_t& len) {
  sockaddr_storage ss{};
  if (std::strchr(addr, ':')) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    ::inet_pton(AF_INET6, addr, &a->sin6_addr);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    ::inet_pton(AF_INET, addr, &a->sin_addr);
    len = sizeof *a;
  }
  return ss;
}

// Connects from a child running as `uid` to addr:80; true if `listener` got the connection.
bool redirected_as(uid_t uid, int listener, const char* addr) {
  int go[2];
  if (::pipe(go) != 0) return false;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(go[0]);
    if (::setresgid(uid, uid, uid) != 0 || ::setresuid(uid, uid, uid) != 0) ::_exit(2);
    int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    socklen_t len;
    auto to = sockaddr_of(addr, 80, len);
    ::connect(c, reinterpret_cast<sockaddr*>(&to), len);
    (void)::write(go[1], "x", 1);
    ::pause();  // until the parent kills it
    ::_exit(0);
  }
  ::close(go[1]);
  char b;
  (void)::read(go[0], &b, 1);
  pollfd p{listener, POLLIN, 0};
  bool got = ::poll(&p, 1, 500) == 1;
  if (got) ::close(::accept(listener, nullptr, nullptr));
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  ::close(go[0]);
  return got;
}

TEST_F(nft_redirect, skuid_redirects_only_that_uids_sockets) {
  fd_guard l(::socket(AF_INET, SOCK_STREAM, 0));
  uint16_t port = listen_on(l.fd, "127.0.0.1", false);
  ASSERT_NE(port, 0);
  ruleset r;
  r.tcp_port = port;
  r.skuid = 65534;
  r.profiles.push_back({"lab", {samples::cidr("198.18.99.0/24")}, {}, false});
  netlink nl;
  nl.install(r);
  EXPECT_TRUE(redirected_as(65534, l.fd, "198.18.99.5")) << listing("tprosshy");
  EXPECT_FALSE(redirected_as(65533, l.fd, "198.18.99.5"));
  EXPECT_FALSE(connect_and_accept(l.fd, "198.18.99.5", 80, false, 300));  // root's own
  r.skuid = 0;
  nl.install(r);
  EXPECT_FALSE(redirected_as(65534, l.fd, "198.18.99.5"));
  auto a = connect_and_accept(l.fd, "198.18.99.5", 80, false, 2000);
  ASSERT_TRUE(a);
  ::close(*a);
}

// Stands in for tprosshy's DNS front: UDP and TCP on one port, IPv4 and IPv6, every address.
struct dns_listener {
  fd_guard udp4{::socket(AF_INET, SOCK_DGRAM, 0)}, udp6{::socket(AF_INET6, SOCK_DGRAM, 0)};
  fd_guard tcp4{::socket(AF_INET, SOCK_STREAM, 0)}, tcp6{::socket(AF_INET6, SOCK_STREAM, 0)};
  uint16_t port = 0;

  dns_listener() {
    int one = 1;
    ::setsockopt(udp6.fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    ::setsockopt(tcp6.fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    port = listen_on(tcp4.fd, "0.0.0.0", false);
    socklen_t len;
    auto a = sockaddr_of("::", port, len);
    if (port == 0 || ::bind(tcp6.fd, reinterpret_cast<sockaddr*>(&a), len) != 0 ||
        ::listen(tcp6.fd, 8) != 0)
      port = 0;
    a = sockaddr_of("0.0.0.0", port, len);
    if (::bind(udp4.fd, reinterpret_cast<sockaddr*>(&a), len) != 0) port = 0;
    a = sockaddr_of("::", port, len);
    if (::bind(udp6.fd, reinterpret_cast<sockaddr*>(&a), len) != 0) port = 0;
  }

  // Waits for one datagram and answers it; false when none came in time.
  bool answer_one(bool v6, int wait_ms) {
    int fd = v6 ? udp6.fd : udp4.fd;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, wait_ms) != 1) return false;
    char b[64];
    sockaddr_storage from{};
    socklen_t len = sizeof from;
    auto n = ::recvfrom(fd, b, sizeof b, 0, reinterpret_cast<sockaddr*>(&from), &len);
    return n > 0 && ::sendto(fd, "answer", 6, 0, reinterpret_cast<sockaddr*>(&from), len) == 6;
  }
};

// A query from `from` to addr:port over UDP: "answered", "refused" (ICMP port unreachable)
// or "silence". The DNS listener answers what reaches it.
std::string udp_query(const peer& from, dns_listener& l, const char* addr, uint16_t port) {
  bool v6 = std::strchr(addr, ':') != nullptr;
  fd_guard c(from.socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM));
  socklen_t len;
  auto to = sockaddr_of(addr, port, len);
  // Connected: only an answer from addr:port itself is taken, and ICMP errors are seen.
  if (c.fd < 0 || ::connect(c.fd, reinterpret_cast<sockaddr*>(&to), len) != 0 ||
      ::send(c.fd, "query", 5, 0) != 5)
    return std::string("error ") + std::strerror(errno);
  l.answer_one(v6, 300);
  pollfd p{c.fd, POLLIN, 0};
  if (::poll(&p, 1, 500) != 1) return "silence";
  char b[64];
  auto n = ::recv(c.fd, b, sizeof b, 0);
  if (n < 0)
    return errno == ECONNREFUSED ? "refused" : std::string("error ") + std::strerror(errno);
  return std::string(b, n) == "answer" ? "answered" : "garbled";
}

// A TCP connection from `from` to addr:port: "accepted" (by the DNS listener), "refused"
// (reset) or "silence".
std::string tcp_connect(const peer& from, dns_listener& l, const char* addr, uint16_t port) {
  bool v6 = std::strchr(addr, ':') != nullptr;
  fd_guard c(from.socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK));
  socklen_t len;
  auto to = sockaddr_of(addr, port, len);
  if (c.fd < 0) return "error";
  ::connect(c.fd, reinterpret_cast<sockaddr*>(&to), len);
  pollfd p{v6 ? l.tcp6.fd : l.tcp4.fd, POLLIN, 0};
  if (::poll(&p, 1, 300) == 1) {
    fd_guard a(::accept(p.fd, nullptr, nullptr));
    return "accepted";
  }
  pollfd w{c.fd, POLLOUT, 0};
  if (::poll(&w, 1, 500) != 1) return "silence";
  int err = 0;
  socklen_t elen = sizeof err;
  ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &elen);
  return err == ECONNREFUSED ? "refused" : err == 0 ? "connected elsewhere" : std::strerror(err);
}

// The test's namespace as a gateway: a LAN host on tpnlan0 (198.18.97.0/24, fd00:97::/64)
// and a WAN host on tpnwan0 (198.18.96.0/24, fd00:96::/64) that routes the LAN prefixes
// through the gateway, as a host on the WAN side of a router may.
class nft_gateway : public nft_netlink {
 protected:
  void SetUp() override {
    nft_netlink::SetUp();
    lan_.emplace("lan", "tpnlan0", 97, "default", "default");
    wan_.emplace("wan", "tpnwan0", 96, "198.18.97.0/24", "fd00:97::/64");
    ASSERT_NE(dns_.port, 0);
    r_.tcp_port = 1;
    r_.interfaces = {"tpnlan0"};
    r_.capture_dns = true;
    r_.dns_port = dns_.port;
    r_.resolvers = {samples::ip("198.18.95.53"), samples::ip("fd00:95::53")};
  }
  void TearDown() override {
    lan_.reset();
    wan_.reset();
    nft_netlink::TearDown();
  }
  std::optional<peer> lan_, wan_;
  dns_listener dns_;
  ruleset r_;
};

TEST_F(nft_gateway, lan_dns_to_the_gateway_itself_reaches_the_dns_port) {
  netlink nl;
  nl.install(r_);
  for (const char* gw : {"198.18.97.1", "fd00:97::1", "198.18.96.1", "fd00:96::1"}) {
    SCOPED_TRACE(gw);
    EXPECT_EQ(udp_query(*lan_, dns_, gw, 53), "answered") << listing("tprosshy");
    EXPECT_EQ(tcp_connect(*lan_, dns_, gw, 53), "accepted");
  }
  // Only from the gateway interfaces: port 53 of the gateway stays its own for the WAN.
  for (const char* gw : {"198.18.96.1", "fd00:96::1", "198.18.97.1", "fd00:97::1"}) {
    SCOPED_TRACE(gw);
    EXPECT_EQ(udp_query(*wan_, dns_, gw, 53), "refused");
    EXPECT_EQ(tcp_connect(*wan_, dns_, gw, 53), "refused");
  }
  // With every query captured, the same holds through the capture rules.
  r_.capture_all_dns = true;
  nl.install(r_);
  EXPECT_EQ(udp_query(*lan_, dns_, "198.18.97.1", 53), "answered");
  EXPECT_EQ(udp_query(*wan_, dns_, "198.18.97.1", 53), "refused");
}

TEST_F(nft_gateway, dns_port_takes_only_what_was_redirected) {
  netlink nl;
  nl.install(r_);
  for (const char* gw : {"198.18.97.1", "fd00:97::1"}) {
    SCOPED_TRACE(gw);
    // Straight to the DNS port, from the WAN side or the LAN: refused like a closed port.
    EXPECT_EQ(udp_query(*wan_, dns_, gw, dns_.port), "refused") << listing("tprosshy");
    EXPECT_EQ(tcp_connect(*wan_, dns_, gw, dns_.port), "refused");
    EXPECT_EQ(udp_query(*lan_, dns_, gw, dns_.port), "refused");
    EXPECT_EQ(tcp_connect(*lan_, dns_, gw, dns_.port), "refused");
  }
  // Redirected queries still get through.
  for (const char* resolver : {"198.18.95.53", "fd00:95::53"}) {
    EXPECT_EQ(udp_query(*lan_, dns_, resolver, 53), "answered") << resolver;
    EXPECT_EQ(tcp_connect(*lan_, dns_, resolver, 53), "accepted") << resolver;
  }
}

TEST_F(nft_gateway, local_mode_guards_the_dns_port_too) {
  // This machine's own traffic: captured queries arrive, direct ones are refused.
  r_.interfaces.clear();
  netlink nl;
  nl.install(r_);
  sh("ip route add 198.18.95.0/24 dev tpnlan0 && ip -6 route add fd00:95::/64 dev tpnlan0");
  fd_guard c(::socket(AF_INET, SOCK_DGRAM, 0));
  socklen_t len;
  for (auto [addr, port, want] :
       {std::tuple{"198.18.95.53", uint16_t(53), true}, std::tuple{"127.0.0.1", dns_.port, false},
        std::tuple{"198.18.97.1", dns_.port, false}}) {
    SCOPED_TRACE(addr);
    auto to = sockaddr_of(addr, port, len);
    ASSERT_EQ(::sendto(c.fd, "q", 1, 0, reinterpret_cast<sockaddr*>(&to), len), 1);
    EXPECT_EQ(dns_.answer_one(false, 300), want);
  }
}

}  // namespace
}  // namespace tprosshy::nft
