// The restart policy: backoff that grows with failures in a row, and degraded mode only on
// evidence that no worker can be started.
#include "core/restart_policy.hpp"

#include <catch2/catch.hpp>

using namespace torchpool;
using namespace torchpool::core;
using namespace std::chrono_literals;

namespace {
const backoff_params backoff{.initial = 100ms, .max = 1000ms, .multiplier = 2, .jitter = 0.2};
}

TEST_CASE("a child that has not failed restarts at once; failures make it wait longer",
          "[restart_policy]") {
    restart_policy p(backoff, 3, 7);
    CHECK(p.delay(0) == 0ms);
    const auto first = p.delay(1);
    CHECK(first >= 80ms);
    CHECK(first <= 120ms);
    const auto third = p.delay(3);
    CHECK(third >= 320ms);
    CHECK(third <= 480ms);
    CHECK(p.delay(20) <= 1200ms);

    // The same seed makes the same decisions.
    restart_policy again(backoff, 3, 7);
    again.delay(0);
    CHECK(again.delay(1) == first);
}

TEST_CASE("failed starts in a row with no worker ready make the pool degraded, once",
          "[restart_policy]") {
    restart_policy p(backoff, 3, 1);
    CHECK_FALSE(p.failed_start(1, "exited with code 1", false));
    CHECK_FALSE(p.failed_start(2, "exited with code 1", false));
    // A ready worker elsewhere: no evidence that workers cannot start.
    CHECK_FALSE(p.failed_start(3, "exited with code 2", true));
    CHECK_FALSE(p.degraded());
    CHECK(p.failed_start(3, "exited with code 3", false));
    CHECK(p.degraded());
    CHECK(p.last_error() == "exited with code 3");
    CHECK_FALSE(p.failed_start(4, "exited with code 4", false));  // already degraded

    p.worker_ready();
    CHECK_FALSE(p.degraded());
}
