// The worker set keeps what is derived from workers' states right as they change, one
// transition at a time: the idle list, starts in progress, the timer index, the counts.
#include "core/worker_set.hpp"

#include "recorder.hpp"

#include <catch2/catch.hpp>

using namespace torchpool;
using namespace torchpool::core;
using namespace torchpool::core::test;
using namespace std::chrono_literals;

namespace {
const auto none_busy = [](slot_id) { return std::optional<std::size_t>(); };
}

TEST_CASE(
    "a worker that becomes ready is idle until it is sent a task, and leaves the idle "
    "list when it stops",
    "[worker_set]") {
    pool_params params{.worker = {.executable = "/bin/true"}, .workers = 2};
    task_table tasks(2);
    worker_set w(params, tasks);

    w[1].child.begin_start(t0, t0 + 10s);
    CHECK(w.gate().in_progress() == 1);
    CHECK(w.state_of(1) == worker_state::starting);
    w[1].child.became_ready(t0);
    CHECK(w.gate().in_progress() == 0);
    CHECK(w.any_ready());
    CHECK(w.state_of(1) == worker_state::idle);

    // A task sent to it makes it busy (the task table tells).
    tasks.add(7, "m", 0ms, t0);
    CHECK(w.dispatch().pick(none_busy) == slot_id{1});
    tasks.send_next(1);
    CHECK(w.state_of(1) == worker_state::busy);

    // Killed while busy: it was not idle, and is not now.
    w[1].child.stop(stop_reason::deadline, true, t0, 2s);
    CHECK_FALSE(w.any_ready());
    CHECK(w.dispatch().pick(none_busy) == std::nullopt);
}

TEST_CASE("worker timers are indexed as they are set, and retired workers are counted",
          "[worker_set]") {
    pool_params params{.worker = {.executable = "/bin/true"}, .workers = 3};
    task_table tasks(3);
    worker_set w(params, tasks);

    w[0].child.restart_at(t0 + 300ms);
    w[2].child.restart_at(t0 + 100ms);
    CHECK(w.next_timer() == t0 + 100ms);
    CHECK(w.due(t0 + 99ms).empty());
    CHECK(w.due(t0 + 300ms) == std::vector<slot_id>{2, 0});
    w[2].child.restart_at(t0 + 500ms);  // moved: the index follows
    CHECK(w.due(t0 + 300ms) == std::vector<slot_id>{0});

    w.gate().enqueue(1);
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
