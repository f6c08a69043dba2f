// Every test here touches nftables or sockets as root, so the whole binary first moves
// into a network namespace of its own: the host's firewall is never seen, let alone changed.
#include <gtest/gtest.h>
#include <sched.h>

#include <cstdio>
#include <cstring>
#include <string_view>

int main(int argc, char** argv) {
  bool listing = false;
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]).starts_with("--gtest_list_tests")) listing = true;
  if (!listing && ::unshare(CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "netns_tests: unshare(CLONE_NEWNET): %s (run as root)\n",
                 std::strerror(errno));
    return 1;
  }
  // A new namespace has its loopback down.
  if (!listing && std::system("ip link set lo up") != 0) return 1;
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
