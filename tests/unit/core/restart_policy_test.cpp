// The restart policy: backoff that grows with failures since a child was healthy, restart
// intensity as a paced rate, and degraded mode only on evidence that no worker can be
// started.
#include "core/restart_policy.hpp"

#include <catch2/catch.hpp>

using namespace torchpool;
using namespace torchpool::core;
using namespace std::chrono_literals;

namespace {

const time_point t0 = time_point{} + 1000s;

pool_params params_with(std::size_t restarts = 100) {
    return {.workers = 4,
            .restart_backoff = {.initial = 100ms, .max = 1000ms, .multiplier = 2, .jitter = 0.2},
            .restart_limit = {.restarts = restarts, .period = 1s},
            .spawn_failures_until_degraded = 3,
            .degraded_window = 10s,
            .seed = 7};
}

}  // namespace

TEST_CASE("the first failure since a child was healthy restarts at once: later ones wait longer",
          "[restart_policy]") {
    restart_policy p(params_with());
    CHECK(p.next_start(0, true, t0).at == t0);  // stopped on purpose
    CHECK(p.next_start(1, true, t0).at == t0);  // first failure: at once
    const auto second = p.next_start(2, true, t0).at - t0;
    CHECK(second >= 80ms);
    CHECK(second <= 120ms);
    const auto fourth = p.next_start(4, true, t0).at - t0;
    CHECK(fourth >= 320ms);
    CHECK(fourth <= 480ms);
    CHECK(p.next_start(20, true, t0).at - t0 <= 1200ms);

    // The same seed makes the same decisions.
    restart_policy again(params_with());
    CHECK(again.next_start(2, true, t0).at - t0 == second);
}

TEST_CASE("restart intensity lets a burst through, then paces restarts to its rate",
          "[restart_policy]") {
    restart_policy p(params_with(5));  // 5 restarts per second: one per 200 ms once paced
    for (int i = 0; i < 5; ++i) {
        const auto d = p.next_start(1, true, t0);
        CHECK(d.at == t0);
        CHECK_FALSE(d.paced);
    }
    CHECK_FALSE(p.pacing());

    // The sixth in the same instant is held back to the paced rate, and says so once.
    const auto sixth = p.next_start(1, true, t0);
    CHECK(sixth.paced);
    CHECK(sixth.pacing_began);
    CHECK(sixth.at == t0 + 200ms);
    const auto seventh = p.next_start(1, true, t0);
    CHECK(seventh.paced);
    CHECK_FALSE(seventh.pacing_began);
    CHECK(seventh.at == t0 + 400ms);
    CHECK(p.pacing());

    // A planned replacement is never held back.
    CHECK(p.next_start(0, false, t0).at == t0);

    // Once restarts come slower than the rate again, pacing ends, and is announced.
    const auto later = p.next_start(1, true, t0 + 3s);
    CHECK(later.at == t0 + 3s);
    CHECK(later.pacing_ended);
    CHECK_FALSE(p.pacing());
}

TEST_CASE("the default intensity is ten restarts per worker, at least 20", "[restart_policy]") {
    auto params = params_with(0);
    CHECK(restart_policy(params).intensity() == 40);
    params.workers = 1;
    CHECK(restart_policy(params).intensity() == 20);
    params.workers = 32;
    CHECK(restart_policy(params).intensity() == 320);
}

TEST_CASE("failed starts in a row, pool-wide, with no worker ready make the pool degraded once",
          "[restart_policy]") {
    restart_policy p(params_with());
    CHECK_FALSE(p.start_failed("exited with code 1", false, t0));
    CHECK_FALSE(p.start_failed("exited with code 1", false, t0));
    // A ready worker elsewhere: no evidence that workers cannot start.
    CHECK_FALSE(p.start_failed("exited with code 2", true, t0));
    CHECK_FALSE(p.degraded());
    CHECK(p.start_failed("exited with code 3", false, t0));
    CHECK(p.degraded());
    CHECK(p.last_error() == "exited with code 3");
    CHECK_FALSE(p.start_failed("exited with code 4", false, t0));  // already degraded

    CHECK(p.start_succeeded(t0 + 1s));  // recovered
    CHECK_FALSE(p.degraded());
    CHECK_FALSE(p.start_succeeded(t0 + 2s));  // nothing to recover from
}

TEST_CASE("a start that succeeded within the window keeps failures from degrading the pool",
          "[restart_policy]") {
    restart_policy p(params_with());
    CHECK_FALSE(p.start_succeeded(t0));
    // Workers killed while starting, a moment when none is ready: a transient.
    for (int i = 0; i < 10; ++i) {
        CHECK_FALSE(
            p.start_failed("was killed by signal SIGKILL before it was ready", false, t0 + 5s));
    }
    CHECK_FALSE(p.degraded());
    // Past the window with nothing succeeding, the next failure is evidence enough.
    CHECK(p.start_failed("exited with code 1", false, t0 + 10s));

    // A success between failures starts the count over.
    restart_policy q(params_with());
    CHECK_FALSE(q.start_failed("a", false, t0));
    CHECK_FALSE(q.start_failed("b", false, t0));
    q.start_succeeded(t0);
    CHECK_FALSE(q.start_failed("c", false, t0 + 20s));
    CHECK_FALSE(q.start_failed("d", false, t0 + 20s));
    CHECK(q.start_failed("e", false, t0 + 20s));
}
