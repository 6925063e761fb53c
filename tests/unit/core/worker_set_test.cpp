// The worker set keeps what is derived from workers' states right as they change, one
// transition at a time: the idle list, starts in progress, the timer index, the counts.
#include "core/worker_set.hpp"

#include "recorder.hpp"

#include <catch2/catch.hpp>

using namespace torchpool;
using namespace torchpool::core;
using namespace torchpool::core::test;
using namespace std::chrono_literals;

TEST_CASE(
    "a worker that becomes ready is idle until it is sent a task, and leaves the idle "
    "list when it stops",
    "[worker_set]") {
    pool_params params{.worker = {.executable = "/bin/true"}, .workers = 2};
    worker_set w(params);
    const auto holds_one = [](slot_id) { return std::size_t{1}; };

    w[1].child.begin_start(t0, t0 + 10s);
    CHECK(w.gate().in_progress() == 1);
    CHECK(w.status(1) == worker_status::starting);
    CHECK(w.state_of(1) == worker_state::starting);
    w[1].child.became_ready(t0);
    CHECK(w.gate().in_progress() == 0);
    CHECK(w.any_ready());
    CHECK(w.status(1) == worker_status::idle);

    // Picked, it stays idle until it is sent the task; then it is busy, off the idle list.
    CHECK(w.pick(holds_one) == slot_id{1});
    w.task_sent(1);
    CHECK(w.status(1) == worker_status::busy);
    CHECK(w.state_of(1) == worker_state::busy);
    CHECK(w.pick(holds_one) == std::nullopt);  // no prefetch: a busy worker takes no more
    w.all_answered(1);
    CHECK(w.status(1) == worker_status::idle);
    CHECK(w.pick(holds_one) == slot_id{1});
    w.task_sent(1);

    // Killed while busy: it was not idle, and is not now.
    w[1].child.stop(stop_reason::deadline, true, t0, 2s);
    CHECK(w.status(1) == worker_status::stopping);
    CHECK_FALSE(w.any_ready());
    CHECK(w.pick(holds_one) == std::nullopt);
}

TEST_CASE("an idle worker sent a heartbeat takes no task until it answers", "[worker_set]") {
    pool_params params{.worker = {.executable = "/bin/true"}, .workers = 1};
    worker_set w(params);
    const auto holds_one = [](slot_id) { return std::size_t{1}; };
    w[0].child.begin_start(t0, t0 + 10s);
    w[0].child.became_ready(t0);

    w.probe(0);
    CHECK(w.status(0) == worker_status::probing);
    CHECK(w.state_of(0) == worker_state::idle);  // to the host, still idle
    CHECK(w.ready_count() == 1);
    CHECK(w.pick(holds_one) == std::nullopt);
    w.all_answered(0);  // not busy: no change
    CHECK(w.status(0) == worker_status::probing);
    w.probe_answered(0);
    CHECK(w.pick(holds_one) == slot_id{0});
}

TEST_CASE(
    "a slot that waits for its turn to start is in the start gate until it starts or "
    "is retired",
    "[worker_set]") {
    pool_params params{
        .worker = {.executable = "/bin/true"}, .workers = 2, .max_concurrent_starts = 1};
    worker_set w(params);
    w.wait_for_start(0);
    w.wait_for_start(1);
    CHECK(w.status(0) == worker_status::waiting);
    CHECK(w.gate().waiting_count() == 2);

    const auto first = w.next_to_start();
    REQUIRE(first == slot_id{0});
    w[0].child.begin_start(t0, t0 + 10s);
    CHECK(w.count(worker_status::starting) == 1);
    CHECK(w.next_to_start() == std::nullopt);  // one start at a time

    w[1].child.retire();  // the pool stops: its turn is skipped
    CHECK(w.status(1) == worker_status::stopped);
    CHECK(w.gate().waiting_count() == 0);
    w[0].child.became_ready(t0);
    CHECK(w.next_to_start() == std::nullopt);
}

TEST_CASE("worker timers are indexed as they are set, and retired workers are counted",
          "[worker_set]") {
    pool_params params{.worker = {.executable = "/bin/true"}, .workers = 3};
    worker_set w(params);

    w[0].child.restart_at(t0 + 300ms);
    w[2].child.restart_at(t0 + 100ms);
    CHECK(w.next_timer() == t0 + 100ms);
    CHECK(w.due(t0 + 99ms).empty());
    CHECK(w.due(t0 + 300ms) == std::vector<slot_id>{2, 0});
    w[2].child.restart_at(t0 + 500ms);  // moved: the index follows
    CHECK(w.due(t0 + 300ms) == std::vector<slot_id>{0});

    w.wait_for_start(1);
    pool_stats stats;
    w.count(stats);
    CHECK(stats.workers_backoff == 2);
    CHECK(stats.workers_waiting == 1);

    for (slot_id s = 0; s < 3; ++s) {
        w[s].child.retire();
    }
    CHECK(w.all_stopped());
    CHECK_FALSE(w.gate().waiting(1));  // a retired worker no longer waits to start
    CHECK(w.next_timer() == std::nullopt);
}
