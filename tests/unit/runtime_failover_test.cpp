// Which host new flows go to: first in service, failback only after the hysteresis, and
// never held back by a serving host that is out of service itself.
#include <gtest/gtest.h>

#include "runtime/failover.hpp"

namespace tprosshy::runtime {
namespace {

using namespace std::chrono_literals;
constexpr auto hold = 30s;
const std::optional<std::chrono::steady_clock::duration> down;

TEST(Failover, FirstHostInServiceFromTheStart) {
  EXPECT_EQ(pick_host({1s, 100s}, std::nullopt, hold), 0u);
  EXPECT_EQ(pick_host({down, 1s}, std::nullopt, hold), 1u);
  EXPECT_EQ(pick_host({down, down}, std::nullopt, hold), std::nullopt);
  EXPECT_EQ(pick_host({}, std::nullopt, hold), std::nullopt);
}

TEST(Failover, MovesOnWhenTheServingHostFails) {
  EXPECT_EQ(pick_host({down, 50s, 50s}, 0u, hold), 1u);
  EXPECT_EQ(pick_host({down, down, 1s}, 1u, hold), 2u);
}

TEST(Failover, BackToAnEarlierHostOnlyAfterTheHysteresis) {
  EXPECT_EQ(pick_host({29s, 100s}, 1u, hold), 1u);
  EXPECT_EQ(pick_host({30s, 100s}, 1u, hold), 0u);
  EXPECT_EQ(pick_host({5s, 31s, 100s}, 2u, hold), 1u);  // the earliest that has waited
  EXPECT_EQ(pick_host({1s, 100s}, 0u, hold), 0u);       // the serving one itself: no wait
}

TEST(Failover, AServingHostOutOfServiceHoldsNothingBack) {
  // The backup failed while the first host was back for only 2 s: the first takes flows
  // now rather than none at all.
  EXPECT_EQ(pick_host({2s, down}, 1u, hold), 0u);
  EXPECT_EQ(pick_host({2s, 1s, down}, 2u, hold), 0u);
  EXPECT_EQ(pick_host({2s}, 5u, hold), 0u);  // a host index from before a reload
}

}  // namespace
}  // namespace tprosshy::runtime
