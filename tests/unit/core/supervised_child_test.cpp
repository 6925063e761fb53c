// The lifecycle of one supervised child, one transition at a time: what it becomes, what it
// asks the driver to do, and exactly which changes it tells its observer.
#include "core/supervised_child.hpp"

#include "recorder.hpp"

#include <catch2/catch.hpp>

using namespace torchpool::core;
using namespace torchpool::core::test;
using namespace std::chrono_literals;
using strings = std::vector<std::string>;

TEST_CASE("a child starts, becomes ready, and each change is told once", "[child]") {
    recorder seen;
    supervised_child c(3, 1024, &seen);

    // It is made waiting, with no timer: waiting again changes nothing.
    c.wait_for_turn();
    CHECK(seen.take().empty());

    // Its start begins, with a deadline.
    c.begin_start(t0, t0 + 10s);
    CHECK(seen.take() == strings{"child 3: backoff -> starting", "child 3: timer at +10000 ms"});
    CHECK(c.awaiting_process());
    CHECK(c.ever_started());

    // The process exists: no state change.
    c.spawned(42, t0 + 5ms);
    CHECK(seen.take().empty());
    CHECK(c.pid() == 42);
    CHECK_FALSE(c.awaiting_process());
    CHECK(c.process_start() == t0 + 5ms);

    // Hello: running, the start deadline is off.
    c.became_ready(t0);
    CHECK(seen.take() == strings{"child 3: starting -> running", "child 3: timer off"});
}

TEST_CASE("a stop asks first with a grace period, then can only be escalated to a kill once",
          "[child]") {
    recorder seen;
    supervised_child c(0, 1024, &seen);
    c.begin_start(t0, t0 + 10s);
    c.spawned(42, t0);
    c.became_ready(t0);
    seen.take();

    CHECK(c.stop(stop_reason::deadline, false, t0, 2s) == stop_step::ask);
    CHECK(seen.take() == strings{"child 0: running -> stopping", "child 0: timer at +2000 ms"});
    CHECK(c.asked_to_stop());
    CHECK_FALSE(c.killed());

    // Asking again does nothing; forcing kills, once.
    CHECK(c.stop(stop_reason::deadline, false, t0 + 1s, 2s) == stop_step::none);
    CHECK(c.stop(stop_reason::protocol, true, t0 + 1s, 2s) == stop_step::kill);
    CHECK(seen.take() == strings{"child 0: timer off"});
    CHECK(c.killed());
    CHECK(c.stop(stop_reason::protocol, true, t0 + 1s, 2s) == stop_step::none);
    // The reason it was first stopped for stays.
    CHECK(c.reason() == stop_reason::deadline);
}

TEST_CASE("a forced stop kills at once: a child without a process is retired", "[child]") {
    recorder seen;
    supervised_child starting(1, 1024, &seen);
    starting.begin_start(t0, t0 + 10s);
    seen.take();
    CHECK(starting.stop(stop_reason::spawn_timeout, true, t0, 2s) == stop_step::kill);
    CHECK(seen.take() == strings{"child 1: starting -> stopping", "child 1: timer off"});

    supervised_child waiting(2, 1024, &seen);
    waiting.restart_at(t0 + 100ms);
    seen.take();
    CHECK(waiting.stop(stop_reason::shutdown, false, t0, 2s) == stop_step::none);
    CHECK(seen.take() == strings{"child 2: backoff -> stopped", "child 2: timer off"});
    CHECK(waiting.stop(stop_reason::shutdown, true, t0, 2s) == stop_step::none);
    CHECK(seen.take().empty());
}

TEST_CASE("failures count in a row until the child is healthy: failed starts until it is ready",
          "[child]") {
    recorder seen;
    supervised_child c(0, 1024, &seen);
    CHECK(c.count_failed_start() == 1);
    CHECK(c.count_failed_start() == 2);
    CHECK(c.failures() == 2);

    c.begin_start(t0, t0 + 10s);
    c.became_ready(t0 + 1s);
    CHECK(c.failed_starts() == 0);
    CHECK(c.failures() == 2);  // a hello alone is not yet evidence of health
    // It dies 500 ms after it became ready: not healthy for long enough (1 s) to forget.
    c.count_failure(t0 + 1500ms, 1s);
    CHECK(c.failures() == 3);

    c.begin_start(t0 + 2s, t0 + 12s);
    c.became_ready(t0 + 3s);
    // Ready for a whole second: healthy, so this death is the first failure again.
    c.count_failure(t0 + 4s, 1s);
    CHECK(c.failures() == 1);

    // A task answered is health at once.
    c.healthy();
    CHECK(c.failures() == 0);
}

TEST_CASE("a new start clears what belonged to the previous process", "[child]") {
    recorder seen;
    supervised_child c(0, 1024, &seen);
    c.begin_start(t0, t0 + 10s);
    c.spawned(42, t0);
    c.append_log("old output\n");
    c.stop(stop_reason::deadline, true, t0, 2s);
    c.process_gone();
    CHECK(c.pid() == 0);
    CHECK_FALSE(c.killed());
    c.restart_at(t0 + 1s);
    seen.take();

    c.begin_start(t0 + 1s, t0 + 11s);
    CHECK(seen.take() == strings{"child 0: backoff -> starting", "child 0: timer at +11000 ms"});
    CHECK(c.log().text().empty());
    CHECK(c.reason() == stop_reason::none);
    CHECK(c.process_start() == t0 + 1s);
}

TEST_CASE("the timer says what is due, and a sooner deadline replaces a later one", "[child]") {
    supervised_child c(0, 1024, nullptr);
    CHECK(c.due() == timer_purpose::none);
    c.restart_at(t0 + 1s);
    CHECK(c.due() == timer_purpose::restart);
    c.begin_start(t0 + 1s, t0 + 11s);
    CHECK(c.due() == timer_purpose::start_deadline);
    c.became_ready(t0 + 2s);
    CHECK(c.due() == timer_purpose::none);
    CHECK(c.timer() == time_point::max());

    c.set_timer_if_sooner(timer_purpose::cancel_grace, t0 + 7s);
    c.set_timer_if_sooner(timer_purpose::channel_grace, t0 + 9s);  // later: not taken
    CHECK(c.due() == timer_purpose::cancel_grace);
    CHECK(c.timer() == t0 + 7s);
    c.set_timer_if_sooner(timer_purpose::channel_grace, t0 + 5s);
    CHECK(c.due() == timer_purpose::channel_grace);

    c.stop(stop_reason::deadline, false, t0 + 3s, 2s);
    CHECK(c.due() == timer_purpose::stop_grace);
    CHECK(c.timer() == t0 + 5s);
    c.stop(stop_reason::deadline, true, t0 + 4s, 2s);  // escalated to a kill: nothing due
    CHECK(c.due() == timer_purpose::none);
}
