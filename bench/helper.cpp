// What the helper costs: the ruleset of a reload (10 profiles, each with IPv4 and IPv6
// subnets and learned sets) and one learned address, installed in-process with
// nft::netlink (as before the helper) and through a spawned `tprosshy helper --stdio`.
// Prints one line of key=value pairs (milliseconds). Root; it moves itself into a network
// namespace of its own first, so nothing outside it is touched.
// usage: bench_helper TPROSSHY_BINARY [ROUNDS]
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "helper/client.hpp"
#include "nft/netlink.hpp"

namespace {

using namespace tprosshy;
using clock_type = std::chrono::steady_clock;

nft::ruleset reload_ruleset(int variant) {
  nft::ruleset r;
  r.mark = 0x7470;
  r.tcp_port = 12300;
  r.capture_dns = true;
  r.dns_port = 12353;
  r.resolvers = {boost::asio::ip::make_address("127.0.0.53")};
  for (int i = 0; i < 10; ++i) {
    nft::profile_routes p;
    p.name = "p" + std::to_string(i);
    auto v4 = boost::asio::ip::make_address("10." + std::to_string(i) + "." +
                                            std::to_string(variant % 200) + ".0");
    auto v4e = boost::asio::ip::make_address("10." + std::to_string(i) + "." +
                                             std::to_string(variant % 200) + ".255");
    p.v4 = {{v4, v4e}};
    p.v6 = {{boost::asio::ip::make_address("fd00:" + std::to_string(i) + "::"),
             boost::asio::ip::make_address("fd00:" + std::to_string(i) + "::ffff")}};
    p.learned = true;
    p.known = {{boost::asio::ip::make_address("198.18.9." + std::to_string(i + 1)),
                std::chrono::seconds(600)}};
    r.bypass.push_back({boost::asio::ip::make_address("198.18.1.2"), 22, p.name});
    r.profiles.push_back(std::move(p));
  }
  return r;
}

struct figures {
  double p50 = 0, p99 = 0;
};

figures time_it(int rounds, const std::function<void(int)>& f) {
  std::vector<double> ms;
  for (int i = 0; i < rounds; ++i) {
    const auto t0 = clock_type::now();
    f(i);
    ms.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms[std::min(ms.size() - 1, ms.size() * 99 / 100)]};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_helper TPROSSHY_BINARY [ROUNDS]\n");
    return 64;
  }
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 200;
  if (::unshare(CLONE_NEWNET) != 0) {
    std::perror("bench_helper: unshare(CLONE_NEWNET) (needs root)");
    return 77;
  }
  try {
    figures install_direct, install_helper, learn_direct, learn_helper;
    {
      nft::netlink nl;
      install_direct = time_it(rounds, [&](int i) { nl.install(reload_ruleset(i)); });
      learn_direct = time_it(rounds, [&](int i) {
        nl.learn("p3", boost::asio::ip::make_address("198.19.0." + std::to_string(i % 250 + 1)),
                 std::chrono::seconds(60));
      });
      nl.remove();
    }
    {
      auto h = helper::client::spawn(argv[1]);
      install_helper = time_it(rounds, [&](int i) { h.install(reload_ruleset(i)); });
      learn_helper = time_it(rounds, [&](int i) {
        h.learn("p3", boost::asio::ip::make_address("198.19.0." + std::to_string(i % 250 + 1)),
                std::chrono::seconds(60));
      });
      h.remove();
    }
    std::printf(
        "rounds=%d install_direct_p50=%.3f install_direct_p99=%.3f install_helper_p50=%.3f "
        "install_helper_p99=%.3f learn_direct_p50=%.3f learn_direct_p99=%.3f "
        "learn_helper_p50=%.3f learn_helper_p99=%.3f\n",
        rounds, install_direct.p50, install_direct.p99, install_helper.p50, install_helper.p99,
        learn_direct.p50, learn_direct.p99, learn_helper.p50, learn_helper.p99);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_helper: %s\n", e.what());
    return 70;
  }
  return 0;
}
