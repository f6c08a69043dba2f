// The DNS server and its upstreams against real dnsmasq processes, inside the test's own
// network namespace: a "remote" dnsmasq (198.18.77.1:53, names under r.test) reached over
// TCP through a counting relay, as a profile's tunnel would be, and a "local" dnsmasq
// (198.18.77.2:53, names under l.test) reached over marked UDP.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <boost/endian/conversion.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dns/message.hpp"
#include "dns/resolv_conf.hpp"
#include "dns/server.hpp"
#include "dns/upstream.hpp"

namespace asio = boost::asio;
namespace dns = tprosshy::dns;
using asio::as_tuple;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using udp = asio::ip::udp;
using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;

namespace {

const auto remote_ip = asio::ip::make_address("198.18.77.1");
const auto local_ip = asio::ip::make_address("198.18.77.2");
constexpr std::uint32_t mark = 0x2a;

void sh(const std::string& cmd) { ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd; }

// One child process, killed (by its pid) when the object goes.
class child {
 public:
  explicit child(std::vector<std::string> argv) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    if (posix_spawnp(&pid_, args[0], &fa, nullptr, args.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
  }
  ~child() { stop(); }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 100 && ::waitpid(pid_, nullptr, WNOHANG) == 0; ++i)
      std::this_thread::sleep_for(10ms);
    if (::waitpid(pid_, nullptr, WNOHANG) == 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }
  bool running() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

std::filesystem::path tmpdir() {
  auto d = std::filesystem::temp_directory_path() / ("tp_dns_test." + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d;
}

std::unique_ptr<child> start_dnsmasq(const asio::ip::address& ip, const std::string& domain,
                                     const std::filesystem::path& hosts, int ttl) {
  return std::make_unique<child>(std::vector<std::string>{
      "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--port=53",
      "--listen-address=" + ip.to_string(), "--bind-interfaces", "--pid-file=", "--user=root",
      "--local=/" + domain + "/",
      "--address=/www." + domain + "/" + (domain == "r.test" ? "198.18.50.1" : "198.18.51.1"),
      "--addn-hosts=" + hosts.string(), "--local-ttl=" + std::to_string(ttl)});
}

// Runs the io_context until `a` finishes (or a deadline, which fails the test).
template <class T>
T run(asio::io_context& io, awaitable<T> a, std::chrono::seconds limit = 30s) {
  io.restart();  // it stops whenever it runs out of work
  auto f = asio::co_spawn(io, std::move(a), asio::use_future);
  const auto end = std::chrono::steady_clock::now() + limit;
  while (f.wait_for(0s) != std::future_status::ready) {
    if (std::chrono::steady_clock::now() > end) throw std::runtime_error("test timed out");
    io.run_one_for(50ms);
  }
  return f.get();
}

void wait_tcp(asio::io_context& io, const tcp::endpoint& e) {
  for (int i = 0; i < 100; ++i) {
    tcp::socket s(io);
    boost::system::error_code ec;
    s.connect(e, ec);
    if (!ec) return;
    std::this_thread::sleep_for(50ms);
  }
  FAIL() << "nothing listens on " << e;
}

// A TCP relay that counts the connections it accepts and can cut them all.
struct relay {
  relay(asio::io_context& io, tcp::endpoint to)
      : to(to), acc(io, {asio::ip::make_address("127.0.0.1"), 0}) {
    asio::co_spawn(io, accept(), asio::detached);
  }
  tcp::endpoint to;
  tcp::acceptor acc;
  int accepted = 0;
  std::vector<std::weak_ptr<std::pair<tcp::socket, tcp::socket>>> open;
  // Like an ssh master's channel open: one byte to the client once the server end is
  // connected (see open_channel).
  bool confirm = false;
  // A black-holed path: nothing passes either way on open connections, and new ones are
  // accepted but never reach the server, so their channel never opens.
  bool hole = false;
  std::vector<std::shared_ptr<tcp::socket>> held;

  tcp::endpoint endpoint() const { return acc.local_endpoint(); }
  void cut() {
    for (auto& w : open)
      if (auto p = w.lock()) {
        boost::system::error_code ec;
        p->first.close(ec);
        p->second.close(ec);
      }
  }
  // Bytes from the server after which every connection is cut (once), mid-answer.
  std::size_t cut_after = SIZE_MAX;
  std::size_t down = 0;

  awaitable<void> pump(tcp::socket& a, tcp::socket& b, bool from_server) {
    std::array<char, 16384> buf;
    for (;;) {
      auto [ec, n] = co_await a.async_read_some(asio::buffer(buf), as_tuple(use_awaitable));
      if (ec) break;
      if (hole) continue;
      bool cutting = false;
      if (from_server && down + n > cut_after) {
        n = cut_after - down;
        cutting = true;
      }
      if (from_server) down += n;
      auto [ec2, m] = co_await asio::async_write(b, asio::buffer(buf, n), as_tuple(use_awaitable));
      if (ec2) break;
      if (cutting) {
        cut_after = SIZE_MAX;
        cut();
        break;
      }
    }
    boost::system::error_code ec;
    a.close(ec);
    b.close(ec);
  }
  awaitable<void> accept() {
    for (;;) {
      auto [ec, s] = co_await acc.async_accept(as_tuple(use_awaitable));
      if (ec) co_return;
      ++accepted;
      if (hole) {
        held.push_back(std::make_shared<tcp::socket>(std::move(s)));
        continue;
      }
      auto p = std::make_shared<std::pair<tcp::socket, tcp::socket>>(
          std::move(s), tcp::socket(acc.get_executor()));
      open.push_back(p);
      auto [ec2] = co_await p->second.async_connect(to, as_tuple(use_awaitable));
      if (ec2) continue;
      if (confirm) {
        const std::uint8_t opened = 1;
        auto [ec3, n] =
            co_await asio::async_write(p->first, asio::buffer(&opened, 1), as_tuple(use_awaitable));
        if (ec3) continue;
      }
      asio::co_spawn(
          acc.get_executor(),
          [this, p]() -> awaitable<void> {
            co_await (pump(p->first, p->second, false) && pump(p->second, p->first, true));
          },
          asio::detached);
    }
  }
};

dns::tcp_upstream::connector connect_to(tcp::endpoint e) {
  return [e]() -> awaitable<dns::link> {
    tcp::socket s(co_await asio::this_coro::executor);
    co_await s.async_connect(e, use_awaitable);
    co_return dns::link{asio::generic::stream_protocol::socket(std::move(s)), nullptr};
  };
}

// A channel to the nameserver through the relay at `relay` (its `confirm` set), as a
// profile's tunnel opens one: usable once the relay says the server end is connected,
// which a black-holed relay never does.
dns::tcp_upstream::connector open_channel(tcp::endpoint relay) {
  return [relay]() -> awaitable<dns::link> {
    tcp::socket s(co_await asio::this_coro::executor);
    co_await s.async_connect(relay, use_awaitable);
    std::array<std::uint8_t, 1> opened;
    co_await asio::async_read(s, asio::buffer(opened), use_awaitable);
    co_return dns::link{asio::generic::stream_protocol::socket(std::move(s)), nullptr};
  };
}

// A query over UDP; nullopt on timeout.
awaitable<std::optional<dns::bytes>> ask_udp(udp::endpoint server, dns::bytes q,
                                             std::chrono::milliseconds timeout = 5000ms) {
  auto ex = co_await asio::this_coro::executor;
  udp::socket s(ex, udp::endpoint(server.protocol(), 0));
  co_await s.async_send_to(asio::buffer(q), server, use_awaitable);
  dns::bytes buf(65535);
  asio::steady_timer t(ex, timeout);
  auto r =
      co_await (s.async_receive(asio::buffer(buf), use_awaitable) || t.async_wait(use_awaitable));
  if (r.index() == 1) co_return std::nullopt;
  buf.resize(std::get<0>(r));
  co_return buf;
}

dns::bytes framed(const dns::bytes& m) {
  dns::bytes out{static_cast<std::uint8_t>(m.size() >> 8), static_cast<std::uint8_t>(m.size())};
  out.insert(out.end(), m.begin(), m.end());
  return out;
}

awaitable<dns::bytes> read_framed(tcp::socket& s) {
  std::array<std::uint8_t, 2> len;
  co_await asio::async_read(s, asio::buffer(len), use_awaitable);
  dns::bytes m(std::size_t(len[0]) << 8 | len[1]);
  co_await asio::async_read(s, asio::buffer(m), use_awaitable);
  co_return m;
}

// Several queries in one TCP write; the answers in whatever order they come.
awaitable<std::vector<dns::bytes>> ask_tcp(tcp::endpoint server, std::vector<dns::bytes> qs) {
  tcp::socket s(co_await asio::this_coro::executor);
  co_await s.async_connect(server, use_awaitable);
  dns::bytes all;
  for (auto& q : qs) {
    auto f = framed(q);
    all.insert(all.end(), f.begin(), f.end());
  }
  co_await asio::async_write(s, asio::buffer(all), use_awaitable);
  std::vector<dns::bytes> out;
  for (std::size_t i = 0; i < qs.size(); ++i) out.push_back(co_await read_framed(s));
  co_return out;
}

std::vector<std::string> addresses(const dns::bytes& answer) {
  std::vector<std::string> out;
  if (auto m = dns::parse(answer))
    for (auto& r : m->answers)
      if (r.address) out.push_back(r.address->to_string());
  return out;
}

dns::rcode code(const dns::bytes& m) { return dns::parse_header(m)->code(); }

// host<i>.l.test, i < 2000, in the local dnsmasq's hosts file.
std::string local_host_address(int i) {
  return "198.18." + std::to_string(64 + i / 250) + "." + std::to_string(i % 250 + 1);
}

struct timed_answer {
  std::optional<dns::bytes> answer;  // nullopt: none within the client's timeout
  std::chrono::steady_clock::duration took{};
};

// Queries (type A, ID = index) for every name over UDP, `in_flight` at a time, each from
// its own socket (as a stub resolver does) and waiting at most `timeout`.
awaitable<std::vector<timed_answer>> burst(udp::endpoint server, std::vector<std::string> names,
                                           std::size_t in_flight,
                                           std::chrono::milliseconds timeout = 5000ms) {
  auto ex = co_await asio::this_coro::executor;
  std::vector<timed_answer> out(names.size());
  std::size_t next = 0, workers = std::min(in_flight, names.size());
  asio::steady_timer finished(ex, asio::steady_timer::time_point::max());
  for (std::size_t w = 0; w < in_flight && w < names.size(); ++w)
    asio::co_spawn(
        ex,
        [&]() -> awaitable<void> {
          while (next < names.size()) {
            const auto i = next++;
            const auto t0 = std::chrono::steady_clock::now();
            out[i].answer = co_await ask_udp(
                server, dns::make_query(static_cast<std::uint16_t>(i), names[i], dns::rrtype::a),
                timeout);
            out[i].took = std::chrono::steady_clock::now() - t0;
          }
          if (--workers == 0) finished.cancel();
        },
        asio::detached);
  if (workers > 0) co_await finished.async_wait(as_tuple(use_awaitable));
  co_return out;
}

// The kernel's count of UDP datagrams dropped for a full receive buffer, in this namespace.
long udp_rcvbuf_errors() {
  std::ifstream snmp("/proc/net/snmp");
  std::string line, names;
  while (std::getline(snmp, line)) {
    if (!line.starts_with("Udp: ")) continue;
    if (names.empty()) {
      names = line;
      continue;
    }
    std::istringstream n(names), v(line);
    std::string name, value;
    while (n >> name && v >> value)
      if (name == "RcvbufErrors") return std::stol(value);
  }
  return -1;
}

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

struct learned {
  std::string profile;
  std::string address;
  std::uint32_t ttl;
};

class DnsServer : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    sh("ip addr add 198.18.77.1/32 dev lo && ip addr add 198.18.77.2/32 dev lo && "
       "ip addr add 198.18.77.3/32 dev lo");
    dir_ = tmpdir();
    std::ofstream r(dir_ / "remote.hosts");
    for (int i = 0; i < 300; ++i)
      r << "198.18.60." << i % 250 + 1 << " host" << i << ".r.test\n"
        << "fd00:60::" << i + 1 << " host" << i << ".r.test\n";
    for (int i = 0; i < 40; ++i) r << "198.18.61." << i + 1 << " big.r.test\n";
    std::ofstream l(dir_ / "local.hosts");
    for (int i = 0; i < 40; ++i) l << "198.18.62." << i + 1 << " big.l.test\n";
    for (int i = 0; i < 2000; ++i) l << local_host_address(i) << " host" << i << ".l.test\n";
  }
  static void TearDownTestSuite() {
    std::system(
        "ip addr del 198.18.77.1/32 dev lo; ip addr del 198.18.77.2/32 dev lo; "
        "ip addr del 198.18.77.3/32 dev lo");
    std::filesystem::remove_all(dir_);
  }

  void SetUp() override {
    remote_ = start_dnsmasq(remote_ip, "r.test", dir_ / "remote.hosts", 2);
    local_ = start_dnsmasq(local_ip, "l.test", dir_ / "local.hosts", 60);
    wait_tcp(io_, {remote_ip, 53});
    wait_tcp(io_, {local_ip, 53});
  }

  // The server with the remote as profile 0 (domain r.test), reached through relay_ the
  // way a tunnel reaches it, and the local dnsmasq as the local upstream. Upstream
  // options as tprosshy sets them unless given.
  void make_server(dns::tcp_options t = {}, dns::server_options o = {},
                   std::chrono::milliseconds udp_timeout = 2000ms) {
    relay_ = std::make_unique<relay>(io_, tcp::endpoint(remote_ip, 53));
    relay_->confirm = true;
    make_server_to(open_channel(relay_->endpoint()), t, std::move(o), udp_timeout);
  }
  void make_server(std::chrono::milliseconds timeout) {
    make_server({.timeout = timeout, .connect_timeout = 2000ms}, {}, timeout);
  }
  // Likewise with profile 0's nameserver behind `c`.
  void make_server_to(dns::tcp_upstream::connector c, dns::tcp_options t = {},
                      dns::server_options o = {}, std::chrono::milliseconds udp_timeout = 2000ms) {
    profile_ = std::make_shared<dns::tcp_upstream>(io_.get_executor(), std::move(c), t);
    auto local = std::make_shared<dns::udp_upstream>(io_.get_executor(),
                                                     std::vector<udp::endpoint>{{local_ip, 53}},
                                                     dns::udp_options{udp_timeout, mark});
    o.clock = [this] { return now_; };
    server_ = std::make_unique<dns::server>(
        io_.get_executor(),
        std::vector<udp::endpoint>{{asio::ip::make_address("127.0.0.1"), 0},
                                   {asio::ip::make_address("::1"), 0}},
        local, o);
    dns::router r;
    r.add("r.test", 0);
    server_->set_profiles(std::move(r), {{"remote", profile_}});
    server_->on_answer([this](const std::string& p, const asio::ip::address& a, std::uint32_t ttl) {
      learned_.push_back({p, a.to_string(), ttl});
    });
    server_->start();
    udp_ = {asio::ip::make_address("127.0.0.1"), server_->port()};
    tcp_ = {asio::ip::make_address("127.0.0.1"), server_->port()};
  }

  std::optional<dns::bytes> ask(const std::string& name, std::uint16_t type = dns::rrtype::a,
                                std::chrono::milliseconds timeout = 5000ms) {
    return run(io_, ask_udp(udp_, dns::make_query(0x1111, name, type), timeout));
  }

  static inline std::filesystem::path dir_;
  asio::io_context io_;
  std::unique_ptr<child> remote_, local_;
  std::unique_ptr<relay> relay_;
  std::shared_ptr<dns::tcp_upstream> profile_;
  std::unique_ptr<dns::server> server_;
  std::vector<learned> learned_;
  std::chrono::steady_clock::time_point now_ = std::chrono::steady_clock::now();
  udp::endpoint udp_;
  tcp::endpoint tcp_;
};

TEST_F(DnsServer, RoutesByDomainAndKeepsRcode) {
  make_server();
  ASSERT_NE(server_->port(), 0);
  ASSERT_EQ(server_->local_endpoints().size(), 2u);
  EXPECT_EQ(server_->local_endpoints()[1].port(), server_->port());

  auto a = ask("host5.r.test");
  ASSERT_TRUE(a);
  EXPECT_EQ(dns::get_id(*a), 0x1111);
  EXPECT_EQ(code(*a), dns::rcode::noerror);
  EXPECT_EQ(addresses(*a), std::vector<std::string>{"198.18.60.6"});

  auto aaaa = ask("HOST5.R.TEST", dns::rrtype::aaaa);  // case kept in the echoed question
  ASSERT_TRUE(aaaa);
  EXPECT_EQ(addresses(*aaaa), std::vector<std::string>{"fd00:60::6"});
  EXPECT_EQ(dns::parse(*aaaa)->questions[0].name, "HOST5.R.TEST");

  auto www_remote = ask("www.r.test");
  ASSERT_TRUE(www_remote);
  EXPECT_EQ(addresses(*www_remote), std::vector<std::string>{"198.18.50.1"});
  auto www_local = ask("www.l.test");  // the remote does not know l.test: must go local
  ASSERT_TRUE(www_local);
  EXPECT_EQ(addresses(*www_local), std::vector<std::string>{"198.18.51.1"});

  auto nx = ask("nope.r.test");
  ASSERT_TRUE(nx);
  EXPECT_EQ(code(*nx), dns::rcode::nxdomain);
  auto nx_local = ask("nope.l.test");
  ASSERT_TRUE(nx_local);
  EXPECT_EQ(code(*nx_local), dns::rcode::nxdomain);

  // The IPv6 front answers too, and so does TCP on the same port.
  auto v6 = run(io_, ask_udp({asio::ip::make_address("::1"), server_->port()},
                             dns::make_query(7, "host9.r.test", dns::rrtype::a)));
  ASSERT_TRUE(v6);
  EXPECT_EQ(addresses(*v6), std::vector<std::string>{"198.18.60.10"});
  auto t = run(io_, ask_tcp(tcp_, {dns::make_query(8, "host10.r.test", dns::rrtype::a)}));
  EXPECT_EQ(addresses(t.at(0)), std::vector<std::string>{"198.18.60.11"});

  // Learned routes: profile 0's addresses with their TTL, nothing from the local side.
  std::set<std::string> got;
  for (auto& l : learned_) {
    EXPECT_EQ(l.profile, "remote");
    EXPECT_LE(l.ttl, 2u);
    got.insert(l.address);
  }
  EXPECT_EQ(got, (std::set<std::string>{"198.18.60.6", "fd00:60::6", "198.18.50.1", "198.18.60.10",
                                        "198.18.60.11"}));
  EXPECT_EQ(relay_->accepted, 1);
}

// Queries for names host<first>..host<first+count-1> at once over UDP; how many came
// back right.
awaitable<int> concurrent(udp::endpoint server, int first, int count) {
  auto ex = co_await asio::this_coro::executor;
  int ok = 0, done = 0;
  asio::steady_timer finished(ex, asio::steady_timer::time_point::max());
  for (int i = first; i < first + count; ++i)
    asio::co_spawn(
        ex,
        [&, i]() -> awaitable<void> {
          const auto id = static_cast<std::uint16_t>(i);
          auto a = co_await ask_udp(
              server, dns::make_query(id, "host" + std::to_string(i) + ".r.test", dns::rrtype::a));
          if (a && dns::get_id(*a) == id &&
              addresses(*a) == std::vector<std::string>{"198.18.60." + std::to_string(i % 250 + 1)})
            ++ok;
          if (++done == count) finished.cancel();
        },
        asio::detached);
  co_await finished.async_wait(as_tuple(use_awaitable));
  co_return ok;
}

TEST_F(DnsServer, ManyConcurrentQueriesShareOneConnection) {
  make_server();
  EXPECT_EQ(run(io_, concurrent(udp_, 0, 95)), 95);
  // One connection carries them all; past 3/4 of its 100 queries the next one is opened
  // to stand by.
  EXPECT_EQ(relay_->accepted, 2);
  // 200 more: dnsmasq serves at most 100 queries per TCP connection, so the upstream moves
  // to the standby after 100 (max_queries) rather than lose the rest: 100 + 100 + 95
  // queries on three connections, and a fourth standing by.
  EXPECT_EQ(run(io_, concurrent(udp_, 100, 200)), 200);
  EXPECT_EQ(relay_->accepted, 4);
  EXPECT_EQ(profile_->connections_made(), 4u);
  EXPECT_EQ(server_->stats().queries, 295u);
  EXPECT_EQ(server_->stats().upstream_errors, 0u);
}

TEST_F(DnsServer, CacheServesWhileUpstreamIsDownUntilTtlEnds) {
  make_server(300ms);
  auto first = ask("host20.r.test");
  ASSERT_TRUE(first);
  ASSERT_EQ(addresses(*first), std::vector<std::string>{"198.18.60.21"});
  const auto ttl = dns::parse(*first)->answers[0].ttl;
  ASSERT_EQ(ttl, 2u);
  remote_->stop();
  learned_.clear();

  now_ += 1s;
  auto cached = ask("host20.r.test");
  ASSERT_TRUE(cached);
  EXPECT_EQ(addresses(*cached), std::vector<std::string>{"198.18.60.21"});
  EXPECT_EQ(dns::parse(*cached)->answers[0].ttl, 1u);
  EXPECT_EQ(server_->stats().cache_hits, 1u);
  EXPECT_TRUE(learned_.empty());  // a cache hit is not learned again

  now_ += 1s;
  const auto t0 = std::chrono::steady_clock::now();
  auto expired = ask("host20.r.test");
  ASSERT_TRUE(expired);
  EXPECT_EQ(code(*expired), dns::rcode::servfail);
  EXPECT_EQ(dns::get_id(*expired), 0x1111);
  EXPECT_EQ(dns::parse(*expired)->questions.at(0).name, "host20.r.test");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  EXPECT_EQ(server_->stats().upstream_errors, 1u);
}

TEST_F(DnsServer, TruncatesForUdpAndServesInFullOverTcp) {
  make_server();
  // A client advertising 4096 bytes of EDNS gets it all over UDP, with an OPT back.
  auto q = dns::make_query(4, "big.r.test", dns::rrtype::a);
  q[11] = 1;
  const std::uint8_t opt[] = {0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0};
  q.insert(q.end(), std::begin(opt), std::end(opt));
  auto edns = run(io_, ask_udp(udp_, q));
  ASSERT_TRUE(edns);
  EXPECT_FALSE(dns::parse_header(*edns)->tc());
  EXPECT_EQ(addresses(*edns).size(), 40u);
  EXPECT_TRUE(dns::parse(*edns)->edns_size);

  // Without EDNS, the same (now cached) answer does not fit: TC, no records, no OPT.
  auto small = ask("big.r.test");
  ASSERT_TRUE(small);
  auto m = dns::parse(*small);
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->head.tc());
  EXPECT_TRUE(m->answers.empty());
  EXPECT_FALSE(m->edns_size);
  EXPECT_LE(small->size(), 512u);

  // Over TCP it comes whole, still without an OPT the client did not ask for.
  auto full = run(io_, ask_tcp(tcp_, {dns::make_query(3, "big.r.test", dns::rrtype::a)}));
  EXPECT_EQ(addresses(full.at(0)).size(), 40u);
  EXPECT_FALSE(dns::parse_header(full.at(0))->tc());
  EXPECT_FALSE(dns::parse(full.at(0))->edns_size);
  EXPECT_EQ(server_->stats().cache_hits, 2u);
}

TEST_F(DnsServer, PipelinedTcpClient) {
  make_server();
  std::vector<dns::bytes> qs;
  for (int i = 0; i < 30; ++i)
    qs.push_back(dns::make_query(static_cast<std::uint16_t>(1000 + i),
                                 "host" + std::to_string(100 + i) + ".r.test", dns::rrtype::a));
  qs.push_back(dns::make_query(2000, "www.l.test", dns::rrtype::a));
  auto answers = run(io_, ask_tcp(tcp_, qs));
  std::set<int> ids;
  for (auto& a : answers) {
    const int id = dns::get_id(a);
    ids.insert(id);
    if (id == 2000)
      EXPECT_EQ(addresses(a), std::vector<std::string>{"198.18.51.1"});
    else
      EXPECT_EQ(addresses(a),
                std::vector<std::string>{"198.18.60." + std::to_string(id - 1000 + 100 + 1)});
  }
  EXPECT_EQ(ids.size(), 31u);
}

TEST_F(DnsServer, SurvivesGarbage) {
  make_server();
  auto abuse = [&]() -> awaitable<std::vector<std::optional<dns::bytes>>> {
    auto ex = co_await asio::this_coro::executor;
    std::vector<std::optional<dns::bytes>> replies;
    udp::socket s(ex, udp::endpoint(udp::v4(), 0));
    std::mt19937 gen(42);
    std::vector<dns::bytes> packets;
    for (int n = 1; n <= 11; ++n) packets.emplace_back(static_cast<std::size_t>(n), 0xff);
    for (int i = 0; i < 200; ++i) {
      dns::bytes junk(gen() % 600);
      for (auto& c : junk) c = static_cast<std::uint8_t>(gen());
      packets.push_back(std::move(junk));
    }
    // Header only, claiming a question: FORMERR with the ID.
    packets.push_back(dns::bytes{0x55, 0x01, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0});
    // A compression loop in the question, and a pointer to itself.
    packets.push_back(
        dns::bytes{0x55, 0x02, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 14, 0xc0, 12, 0, 1, 0, 1});
    packets.push_back(dns::bytes{0x55, 0x03, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1});
    // A response (QR set): never answered, so two servers cannot loop.
    auto resp = dns::make_query(0x5504, "x.r.test", 1);
    resp[2] |= 0x80;
    packets.push_back(resp);
    for (auto& p : packets) co_await s.async_send_to(asio::buffer(p), udp_, use_awaitable);
    dns::bytes buf(65535);
    for (;;) {
      asio::steady_timer t(ex, 500ms);
      auto r = co_await (s.async_receive(asio::buffer(buf), as_tuple(use_awaitable)) ||
                         t.async_wait(as_tuple(use_awaitable)));
      if (r.index() == 1) break;
      replies.emplace_back(dns::bytes(buf.begin(), buf.begin() + std::get<1>(std::get<0>(r))));
    }

    // Over TCP: a 65 535-byte message of junk, a cut-off frame, then a good query on a
    // fresh connection.
    {
      tcp::socket t(ex);
      co_await t.async_connect(tcp_, use_awaitable);
      dns::bytes big(2 + 65535, 0x41);
      big[0] = big[1] = 0xff;
      big[2] = 0x56, big[3] = 0x01, big[4] = 1, big[5] = 0, big[6] = 0, big[7] = 1;
      co_await asio::async_write(t, asio::buffer(big), use_awaitable);
      auto r = co_await read_framed(t);
      replies.emplace_back(std::move(r));
    }
    {
      tcp::socket t(ex);
      co_await t.async_connect(tcp_, use_awaitable);
      dns::bytes cut(5, 0);
      cut[1] = 40;
      co_await asio::async_write(t, asio::buffer(cut), use_awaitable);
    }
    co_return replies;
  };
  auto replies = run(io_, abuse());
  std::set<int> formerr_ids;
  for (auto& r : replies) {
    ASSERT_TRUE(r);
    auto h = dns::parse_header(*r);
    ASSERT_TRUE(h);
    EXPECT_TRUE(h->qr());
    if (h->code() == dns::rcode::formerr) formerr_ids.insert(h->id);
  }
  for (int id : {0x5501, 0x5502, 0x5503, 0x5601}) EXPECT_TRUE(formerr_ids.contains(id)) << id;
  EXPECT_FALSE(formerr_ids.contains(0x5504));

  auto a = ask("host1.r.test");
  ASSERT_TRUE(a);
  EXPECT_EQ(addresses(*a), std::vector<std::string>{"198.18.60.2"});
  auto t = run(io_, ask_tcp(tcp_, {dns::make_query(9, "www.l.test", dns::rrtype::a)}));
  EXPECT_EQ(addresses(t.at(0)), std::vector<std::string>{"198.18.51.1"});
  EXPECT_GE(server_->stats().malformed, 200u);
}

// A profile whose tunnel is black-holed (ssh alive, nothing passes): the client gets
// SERVFAIL well before its own resolver gives up (5 s for most), whatever the retries. The
// open connection stops answering, and the channel opened for the retry never opens.
TEST_F(DnsServer, BlackHoledTunnelAnswersServfailWithinThreeSeconds) {
  make_server();  // the upstream's own timings, as tprosshy runs it
  auto warm = ask("host1.r.test");
  ASSERT_TRUE(warm);
  ASSERT_EQ(code(*warm), dns::rcode::noerror);
  relay_->hole = true;

  std::vector<std::string> names;
  for (int i = 100; i < 150; ++i) names.push_back("host" + std::to_string(i) + ".r.test");
  const auto got = run(io_, burst(udp_, names, names.size(), 10s), 60s);
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].answer) << names[i] << ": no answer in 10 s";
    EXPECT_EQ(code(*got[i].answer), dns::rcode::servfail) << names[i];
    EXPECT_LT(got[i].took, 3s) << names[i] << " took " << seconds(got[i].took) << " s";
  }

  // The path comes back: answers resume once the channel open that hung is given up.
  relay_->hole = false;
  const auto end = std::chrono::steady_clock::now() + 20s;
  bool back = false;
  for (int i = 200; !back && std::chrono::steady_clock::now() < end; ++i) {
    auto a = ask("host" + std::to_string(i) + ".r.test", dns::rrtype::a, 4000ms);
    back = a && code(*a) == dns::rcode::noerror;
  }
  EXPECT_TRUE(back);
}

// The tunnel never opens a channel (a hung ssh master): SERVFAIL within 3 s, not after the
// connect attempts have each timed out.
TEST_F(DnsServer, TunnelThatNeverOpensAChannelAnswersServfailWithinThreeSeconds) {
  make_server();
  relay_->hole = true;
  const auto t0 = std::chrono::steady_clock::now();
  auto a = ask("host3.r.test", dns::rrtype::a, 20000ms);
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(a) << "no answer in 20 s";
  EXPECT_EQ(code(*a), dns::rcode::servfail);
  EXPECT_EQ(dns::get_id(*a), 0x1111);
  EXPECT_LT(took, 3s) << seconds(took) << " s";
}

// A nameserver that takes queries and never answers: the query is sent again on a fresh
// connection, and still SERVFAIL comes within 3 s.
TEST_F(DnsServer, SilentNameserverAnswersServfailWithinThreeSecondsAfterARetry) {
  tcp::acceptor hole(io_, {asio::ip::make_address("127.0.0.1"), 0});
  int accepted = 0;
  std::vector<std::shared_ptr<tcp::socket>> held;
  asio::co_spawn(
      io_,
      [&]() -> awaitable<void> {
        for (;;) {
          auto [ec, s] = co_await hole.async_accept(as_tuple(use_awaitable));
          if (ec) co_return;
          ++accepted;
          held.push_back(std::make_shared<tcp::socket>(std::move(s)));
        }
      },
      asio::detached);
  make_server_to(connect_to(hole.local_endpoint()));
  const auto t0 = std::chrono::steady_clock::now();
  auto a = ask("host4.r.test", dns::rrtype::a, 20000ms);
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(a) << "no answer in 20 s";
  EXPECT_EQ(code(*a), dns::rcode::servfail);
  EXPECT_LT(took, 3s) << seconds(took) << " s";
  EXPECT_EQ(accepted, 2);  // the retry went on a fresh connection
  hole.close();
}

// A burst for the local upstream: 2,000 distinct names, 200 in flight. None may be lost on
// the way (tprosshy's listening socket takes the whole burst at once).
TEST_F(DnsServer, BurstOfLocalNamesLosesNone) {
  make_server();
  std::vector<std::string> names;
  for (int i = 0; i < 2000; ++i) names.push_back("host" + std::to_string(i) + ".l.test");
  const long drops_before = udp_rcvbuf_errors();
  ASSERT_GE(drops_before, 0);
  const auto got = run(io_, burst(udp_, names, 200, 5000ms), 90s);
  // Not one datagram dropped for a full receive buffer in this namespace: the server's
  // listening socket, the upstream's per-query sockets, dnsmasq's, the client's.
  EXPECT_EQ(udp_rcvbuf_errors() - drops_before, 0);
  int silent = 0, wrong = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!got[i].answer) {
      ++silent;
      continue;
    }
    const auto& a = *got[i].answer;
    if (dns::get_id(a) != i || code(a) != dns::rcode::noerror ||
        addresses(a) != std::vector<std::string>{local_host_address(static_cast<int>(i))}) {
      ++wrong;
      ADD_FAILURE() << names[i] << ": rcode " << int(code(a));
    }
  }
  EXPECT_EQ(silent, 0) << "queries never answered";
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(server_->stats().queries, 2000u);
  EXPECT_EQ(server_->stats().upstream_errors, 0u);
}

// More queries than an upstream may have waiting: the ones over get SERVFAIL at once, not
// silence, and other upstreams still answer.
TEST_F(DnsServer, QueriesOverTheInFlightCapGetServfailNotSilence) {
  dns::server_options o;
  o.max_in_flight = 10;
  make_server({}, o);
  relay_->hole = true;  // the profile's queries wait until their deadline
  std::vector<std::string> names;
  for (int i = 0; i < 40; ++i) names.push_back("host" + std::to_string(i) + ".r.test");
  auto both = [&]() -> awaitable<std::tuple<std::vector<timed_answer>, std::optional<dns::bytes>>> {
    co_return co_await (burst(udp_, names, names.size(), 10s) &&
                        ask_udp(udp_, dns::make_query(9, "www.l.test", dns::rrtype::a)));
  };
  const auto [got, local] = run(io_, both(), 60s);
  int quick = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].answer) << names[i] << ": no answer in 10 s";
    EXPECT_EQ(code(*got[i].answer), dns::rcode::servfail) << names[i];
    EXPECT_EQ(dns::get_id(*got[i].answer), i);
    if (got[i].took < 1s) ++quick;  // over the cap: answered at once, not at the deadline
  }
  EXPECT_EQ(server_->stats().overloaded, 30u);
  EXPECT_EQ(quick, 30);
  ASSERT_TRUE(local);  // the local upstream has room of its own
  EXPECT_EQ(addresses(*local), std::vector<std::string>{"198.18.51.1"});
}

// ---------------------------------------------------------------------------------------
// The upstreams on their own.

class DnsUpstream : public DnsServer {};

TEST_F(DnsUpstream, TcpResendsWhenTheConnectionIsCut) {
  relay r(io_, {remote_ip, 53});
  r.cut_after = 1000;  // some answers, then the connection ends mid-answer
  auto up = std::make_shared<dns::tcp_upstream>(io_.get_executor(), connect_to(r.endpoint()));
  auto test = [&]() -> awaitable<int> {
    auto ex = co_await asio::this_coro::executor;
    int ok = 0, done = 0;
    asio::steady_timer finished(ex, asio::steady_timer::time_point::max());
    for (int i = 0; i < 100; ++i)
      asio::co_spawn(
          ex,
          [&, i]() -> awaitable<void> {
            auto a = co_await up->query(dns::make_query(static_cast<std::uint16_t>(7000 + i),
                                                        "host" + std::to_string(i) + ".r.test",
                                                        dns::rrtype::aaaa));
            if (a && dns::get_id(*a) == 7000 + i &&
                addresses(*a) == std::vector<std::string>{"fd00:60::" + std::to_string(i + 1)})
              ++ok;
            if (++done == 100) finished.cancel();
          },
          asio::detached);
    co_await finished.async_wait(as_tuple(use_awaitable));
    co_return ok;
  };
  EXPECT_EQ(run(io_, test()), 100);
  // The cut one, the one they were re-sent on, and standbys opened as each filled up.
  EXPECT_GE(r.accepted, 2);
  EXPECT_LE(r.accepted, 4);
  EXPECT_EQ(up->connections_made(), static_cast<std::size_t>(r.accepted));
  EXPECT_EQ(up->in_flight(), 0u);
}

TEST_F(DnsUpstream, TcpRetriesOnceOnAFreshConnectionThenGivesUp) {
  // A server that accepts and reads but never answers.
  tcp::acceptor hole(io_, {asio::ip::make_address("127.0.0.1"), 0});
  int accepted = 0;
  std::vector<std::shared_ptr<tcp::socket>> held;
  asio::co_spawn(
      io_,
      [&]() -> awaitable<void> {
        for (;;) {
          auto [ec, s] = co_await hole.async_accept(as_tuple(use_awaitable));
          if (ec) co_return;
          ++accepted;
          held.push_back(std::make_shared<tcp::socket>(std::move(s)));
        }
      },
      asio::detached);
  auto up = std::make_shared<dns::tcp_upstream>(
      io_.get_executor(), connect_to(hole.local_endpoint()), dns::tcp_options{200ms, 1000ms});
  const auto t0 = std::chrono::steady_clock::now();
  auto a = run(io_, up->query(dns::make_query(1, "host1.r.test", 1)));
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_FALSE(a);
  EXPECT_EQ(accepted, 2);
  EXPECT_GE(took, 400ms);
  EXPECT_LT(took, 1500ms);

  // Nothing listening at all: fails fast, no answer.
  hole.close();
  auto b = run(io_, up->query(dns::make_query(2, "host1.r.test", 1)));
  EXPECT_FALSE(b);
}

TEST_F(DnsUpstream, UdpFailsOverFallsBackToTcpAndMarks) {
  // Only marked packets may reach the local dnsmasq, so an unmarked socket would fail.
  sh("nft add table inet tp_dns_test && "
     "nft add chain inet tp_dns_test out '{ type filter hook output priority 0; }' && "
     "nft add rule inet tp_dns_test out ip daddr 198.18.77.2 th dport 53 meta mark != 0x2a drop");
  dns::udp_upstream up(io_.get_executor(),
                       {{asio::ip::make_address("198.18.77.3"), 53}, {local_ip, 53}},
                       dns::udp_options{300ms, mark});
  auto a = run(io_, up.query(dns::make_query(0x4321, "www.l.test", dns::rrtype::a)));
  ASSERT_TRUE(a);
  EXPECT_EQ(dns::get_id(*a), 0x4321);
  EXPECT_EQ(addresses(*a), std::vector<std::string>{"198.18.51.1"});

  auto big = run(io_, up.query(dns::make_query(0x4322, "big.l.test", dns::rrtype::a)));
  ASSERT_TRUE(big);
  EXPECT_FALSE(dns::parse_header(*big)->tc());
  EXPECT_EQ(addresses(*big).size(), 40u);
  EXPECT_EQ(dns::get_id(*big), 0x4322);

  dns::udp_upstream unmarked(io_.get_executor(), {{local_ip, 53}}, dns::udp_options{300ms, 0});
  EXPECT_FALSE(run(io_, unmarked.query(dns::make_query(1, "www.l.test", dns::rrtype::a))));
  sh("nft delete table inet tp_dns_test");
}

}  // namespace

// --- a reload while a query waits ---------------------------------------------------

// A nameserver that answers, with one A record, only when released.
class held_upstream : public dns::upstream {
 public:
  held_upstream(asio::any_io_executor ex, std::string addr)
      : release_(ex, asio::steady_timer::time_point::max()), addr_(std::move(addr)) {}
  awaitable<std::optional<dns::bytes>> query(dns::bytes q) override {
    ++asked;
    co_await release_.async_wait(as_tuple(use_awaitable));
    auto r = dns::make_reply(q, dns::rcode::noerror);
    boost::endian::store_big_u16(r.data() + 6, 1);  // ANCOUNT
    std::uint8_t rr[16] = {0xc0, 12, 0, 1, 0, 1};   // the question's name, A, IN
    boost::endian::store_big_u32(rr + 6, 60);       // TTL
    boost::endian::store_big_u16(rr + 10, 4);
    const auto a = asio::ip::make_address_v4(addr_).to_bytes();
    std::copy(a.begin(), a.end(), rr + 12);
    r.insert(r.end(), rr, rr + sizeof rr);
    co_return r;
  }
  void release() { release_.cancel(); }
  int asked = 0;

 private:
  asio::steady_timer release_;
  std::string addr_;
};

TEST(DnsServerReload, AnAnswerAfterAReloadLandsOnTheProfileItWentTo) {
  asio::io_context io;
  auto ex = io.get_executor();
  dns::server server(ex, {{asio::ip::make_address("127.0.0.1"), 0}}, nullptr);
  auto a = std::make_shared<held_upstream>(ex, "198.18.70.1");
  auto b = std::make_shared<held_upstream>(ex, "198.18.70.2");
  auto c = std::make_shared<held_upstream>(ex, "198.18.70.3");
  dns::router before;
  before.add("a.test", 0);
  before.add("b.test", 1);
  before.add("c.test", 2);
  server.set_profiles(std::move(before), {{"a", a}, {"b", b}, {"c", c}});
  std::vector<std::pair<std::string, std::string>> learned;
  std::vector<std::string> counted;
  server.on_answer([&](const std::string& p, const asio::ip::address& addr, std::uint32_t) {
    learned.emplace_back(p, addr.to_string());
  });
  server.on_query([&](const std::optional<std::string>& p, dns::rcode, bool) {
    counted.push_back(p.value_or("local"));
  });
  server.start();
  const udp::endpoint at(asio::ip::make_address("127.0.0.1"), server.port());
  auto answer = asio::co_spawn(io, ask_udp(at, dns::make_query(9, "host.b.test", dns::rrtype::a)),
                               asio::use_future);
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (b->asked == 0 && std::chrono::steady_clock::now() < end) io.run_one_for(50ms);
  ASSERT_EQ(b->asked, 1);
  // The reload: a removed, b moved to index 0, c to index 1 (where b was).
  dns::router after;
  after.add("b.test", 0);
  after.add("c.test", 1);
  server.set_profiles(std::move(after), {{"b", b}, {"c", c}});
  b->release();
  while (answer.wait_for(0s) != std::future_status::ready && std::chrono::steady_clock::now() < end)
    io.run_one_for(50ms);
  ASSERT_EQ(answer.wait_for(0s), std::future_status::ready);
  ASSERT_TRUE(answer.get());
  EXPECT_EQ(learned, (std::vector<std::pair<std::string, std::string>>{{"b", "198.18.70.2"}}));
  EXPECT_EQ(counted, std::vector<std::string>{"b"});
}
