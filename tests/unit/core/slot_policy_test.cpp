// The slot policy alone: which slots start and which workers leave, as commands, one event at
// a time: a recycled worker's hand-over through its resume points, recycling in place, and
// shrinking by resize.
#include "core/slot_policy.hpp"

#include "recorder.hpp"

#include <catch2/catch.hpp>

#include <sstream>

using namespace torchpool;
using namespace torchpool::core;
using namespace torchpool::core::test;
using namespace std::chrono_literals;

namespace {

slot_command start(slot_id s) {
    return {slot_command::kind::start, s};
}
slot_command leave(slot_id s, stop_reason why) {
    return {slot_command::kind::leave, s, why};
}

struct fixture {
    explicit fixture(pool_params p)
        : params(std::move(p)),
          workers(params),
          report_(false, out),
          slots(params, workers, phase, report_) {
        phase.start();
    }
    /// Slot `s` has a ready worker.
    void ready(slot_id s) {
        workers[s].child.begin_start(t0, t0 + 10s);
        slots.began_start(s);
        workers[s].child.became_ready(t0);
    }

    pool_params params;
    worker_set workers;
    pool_phase phase;
    action_queue out;
    report report_;
    slot_policy slots;
};

}  // namespace

TEST_CASE(
    "a recycled worker hands over to a replacement in a spare slot, and leaves once it "
    "is ready and its task is done",
    "[slot_policy]") {
    fixture f({.worker = {.executable = "/bin/true"}, .workers = 2, .recycle = {.max_tasks = 3}});
    CHECK(f.slots.start(t0) == slot_commands{start(0), start(1)});
    f.ready(0);
    f.ready(1);
    CHECK(f.slots.ready(0, t0).empty());

    // Its third task answered while it holds another: a replacement starts in slot 2 (spare).
    f.workers.task_sent(0);
    CHECK(f.slots.answered(0, false, t0).empty());
    CHECK(f.slots.answered(0, false, t0).empty());
    CHECK(f.slots.answered(0, false, t0) == slot_commands{start(2)});
    CHECK(f.slots.size() == 2);  // the replacement is not counted until it takes over
    CHECK(f.slots.in_use() == 3);

    // The replacement is ready while the old worker is busy: it leaves after its task.
    f.ready(2);
    CHECK(f.slots.ready(2, t0).empty());
    CHECK(f.slots.answered(0, true, t0 + 1s) == slot_commands{leave(0, stop_reason::recycle)});
    f.workers[0].child.stop(stop_reason::recycle, false, t0, 1s);  // the coordinator's part
    slot_commands next;
    CHECK(f.slots.gone(0, next));  // parked
    CHECK(next.empty());
    CHECK(f.slots.parked(0));
    CHECK(f.slots.size() == 2);
    CHECK(f.slots.in_use() == 2);
}

TEST_CASE("a recycle that waited for its turn starts once the worker before it has left",
          "[slot_policy]") {
    fixture f({.worker = {.executable = "/bin/true"},
               .workers = 2,
               .recycle = {.max_tasks = 1, .max_at_once = 1}});
    f.slots.start(t0);
    for (slot_id s = 0; s < 2; ++s) {
        f.ready(s);
        f.slots.ready(s, t0);
        f.workers.task_sent(s);
    }
    CHECK(f.slots.answered(0, false, t0) == slot_commands{start(2)});
    CHECK(f.slots.answered(1, false, t0).empty());  // one replacement at a time: it waits

    f.ready(2);
    CHECK(f.slots.ready(2, t0).empty());  // worker 0 is busy: it leaves after its task
    CHECK(f.slots.answered(0, true, t0) == slot_commands{leave(0, stop_reason::recycle)});
    // Its process is gone and its slot parked: the spare is free for worker 1's replacement.
    f.workers[0].child.stop(stop_reason::recycle, false, t0, 1s);
    slot_commands next;
    CHECK(f.slots.gone(0, next));
    CHECK(next == slot_commands{start(0)});
}

TEST_CASE("resize shrinks by idle workers first, and busy ones leave after their task",
          "[slot_policy]") {
    fixture f({.worker = {.executable = "/bin/true"}, .workers = 3});
    f.slots.start(t0);
    for (slot_id s = 0; s < 3; ++s) {
        f.ready(s);
        f.slots.ready(s, t0);
    }
    f.workers.task_sent(0);
    f.workers.task_sent(2);
    std::size_t n = 0;
    CHECK(f.slots.resize(1, n) == slot_commands{leave(1, stop_reason::shrink)});
    CHECK(n == 1);
    CHECK(f.slots.size() == 1);  // slot 0 leaves after its task; slot 2 stays
    CHECK(f.slots.answered(2, true, t0).empty());
    CHECK(f.slots.answered(0, true, t0) == slot_commands{leave(0, stop_reason::recycle)});
}

TEST_CASE("slot commands print themselves", "[slot_policy]") {
    std::ostringstream os;
    os << start(3);
    CHECK(os.str() == "start{slot 3}");
}
