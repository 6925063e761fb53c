// Heartbeats: only idle workers that answer them, one outstanding at a time, unresponsive
// once past the timeout; memory sampling: one busy worker per tick, round robin.
#include "core/heartbeat.hpp"

#include "core/memory_watch.hpp"

#include <catch2/catch.hpp>

using namespace torchpool;
using namespace torchpool::core;
using namespace std::chrono_literals;

namespace {
const time_point t0 = time_point{} + 1000s;
}

TEST_CASE(
    "an idle worker is sent a heartbeat after the interval, and is unresponsive past the "
    "timeout",
    "[heartbeat]") {
    heartbeat_monitor h(3, 1000ms, 300ms);
    h.start(t0);
    CHECK(h.next_sweep() == t0 + 150ms);  // half the shorter time
    h.ready(0, true, t0);
    h.ready(1, true, t0);
    h.ready(2, false, t0);                         // does not answer heartbeats: never sent one
    auto idle = [](slot_id s) { return s != 1; };  // slot 1 is busy

    CHECK(h.sweep(t0 + 999ms, idle).pings.empty());
    auto r = h.sweep(t0 + 1000ms, idle);
    REQUIRE(r.pings.size() == 1);
    CHECK(r.pings[0].slot == 0);
    CHECK(h.waiting(0));
    CHECK(h.sweep(t0 + 1100ms, idle).pings.empty());  // one at a time

    // A wrong sequence is not an answer; the right one is.
    CHECK_FALSE(h.answered(0, r.pings[0].sequence + 1, t0 + 1200ms));
    CHECK(h.answered(0, r.pings[0].sequence, t0 + 1200ms));
    CHECK_FALSE(h.waiting(0));

    // Next time it does not answer: unresponsive once, past the timeout.
    r = h.sweep(t0 + 2200ms, idle);
    REQUIRE(r.pings.size() == 1);
    CHECK(h.sweep(t0 + 2499ms, idle).unresponsive.empty());
    CHECK(h.sweep(t0 + 2500ms, idle).unresponsive == std::vector<slot_id>{0});
    CHECK(h.sweep(t0 + 2600ms, idle).unresponsive.empty());
}

TEST_CASE("memory is read one busy worker per tick, in turn, and never without a limit",
          "[memory_watch]") {
    memory_watch none(4, {});
    none.start(t0);
    CHECK_FALSE(none.next_sample());

    memory_watch m(4, {.soft_limit_bytes = 100, .hard_limit_bytes = 200, .sample_interval = 400ms});
    m.start(t0);
    CHECK(m.next_sample() == t0 + 100ms);  // 400 ms over 4 workers
    auto busy = [](slot_id s) { return s == 1 || s == 3; };
    auto idle = [](slot_id s) { return s == 0 || s == 2; };
    CHECK(m.due(t0 + 100ms, busy, idle) == slot_id{1});
    CHECK(m.due(t0 + 200ms, busy, idle) == slot_id{3});
    CHECK(m.due(t0 + 300ms, busy, idle) == slot_id{1});
    const auto none_busy = [](slot_id) { return false; };
    CHECK_FALSE(m.due(t0 + 400ms, none_busy, idle));

    // A worker whose task ended is read then, unless it was read within the interval: then
    // a later tick reads it, idle or not, once.
    CHECK(m.task_ended(2, t0 + 400ms));
    m.read(2, worker_memory{.private_bytes = 50}, t0 + 400ms);
    CHECK_FALSE(m.task_ended(2, t0 + 500ms));
    CHECK(m.due(t0 + 500ms, none_busy, idle) == slot_id{2});
    m.read(2, std::nullopt, t0 + 500ms);  // could not be read: the last reading stays
    CHECK(m.last(2)->private_bytes == 50);
    CHECK_FALSE(m.due(t0 + 600ms, none_busy, idle));
    m.forget(2);
    CHECK_FALSE(m.last(2));
    CHECK(m.judge(99) == memory_watch::verdict::fine);
    CHECK(m.judge(100) == memory_watch::verdict::over_soft);
    CHECK(m.judge(200) == memory_watch::verdict::over_hard);
}
