// Scenario tests of the pool's decisions about tasks: dispatch, replies, deaths, deadlines,
// the queue, cancellation, protocol errors, shutdown and prefetch. One event at a time, with a
// simulated clock and no processes; each step says what happens and asserts every action the
// core decides. Starts are in starts_test.cpp, health and size in health_and_size_test.cpp.
#include "core/pool_core.hpp"

#include "core_harness.hpp"
#include <torchpool/error.hpp>

#include <boost/asio/error.hpp>

#include <catch2/catch.hpp>

#include <signal.h>

using namespace torchpool;
using namespace torchpool::core;
using namespace torchpool::core::testing;
using namespace std::chrono_literals;

TEST_CASE("a submitted task goes to an idle worker and completes with its reply", "[core]") {
    harness h(two_workers());
    h.start_all_ready();
    CHECK(h.core.stats().workers_idle == 2);

    // Submit: dispatched at once.
    h.core.submit(1, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 1, .task = 1}}));
    CHECK(h.core.state_of(1) == worker_state::busy);

    // The reply completes the task and frees the worker.
    h.core.on_message(1, wire::reply_msg{.id = 1, .payload = "hi"}, h.now);
    const auto actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::completes(1)}));
    const auto& done = std::get<complete_action>(actions[0]);
    CHECK(done.result->payload == "hi");
    CHECK(done.result->worker_pid == 101);
    CHECK(h.core.state_of(1) == worker_state::idle);
    CHECK(h.core.stats().succeeded == 1);
}

TEST_CASE("an error reply fails the task only, and the worker stays up", "[core]") {
    harness h(two_workers());
    h.start_all_ready();
    h.core.submit(1, "throw", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 1, .task = 1}}));
    h.core.on_message(
        1,
        wire::reply_msg{
            .id = 1, .ok = false, .error_type = "std::runtime_error", .error_message = "boom"},
        h.now);
    const auto actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::completes(1, errc::task_failed)}));
    const auto& done = std::get<complete_action>(actions[0]);
    CHECK(done.result->diagnostics.error_type == "std::runtime_error");
    CHECK(done.result->diagnostics.error_message == "boom");
    CHECK(h.core.state_of(1) == worker_state::idle);
}

TEST_CASE(
    "a busy worker's death fails its task with the details: it is replaced at once, and "
    "a replacement that fails too waits with backoff",
    "[core]") {
    auto params = two_workers();
    params.restart_backoff = {.initial = 100ms, .max = 1000ms, .multiplier = 2, .jitter = 0.2};
    harness h(params);
    h.start_all_ready();
    h.core.submit(7, "crash", 0ms, h.now);
    const slot_id slot = 1;
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = slot, .task = 7}}));
    h.core.on_log(slot, "about to crash\n");
    h.now += 250ms;

    // The worker is killed by SIGSEGV while running task 7: the task fails, the worker is
    // replaced at once (its first failure since it was healthy), and the host is told.
    h.core.on_exit(slot, {.signal = SIGSEGV, .core_dumped = true}, h.now);
    const auto after_death = h.take();
    REQUIRE_THAT(after_death,
                 actions_are({expected::completes(7, errc::worker_died), spawn_action{slot},
                              expected::notifies(worker_event::kind::exited, slot)}));
    const auto& done = std::get<complete_action>(after_death[0]);
    const auto& d = done.result->diagnostics;
    CHECK(d.worker_pid == 100 + static_cast<int>(slot));
    CHECK(d.signal == SIGSEGV);
    CHECK(d.core_dumped);
    CHECK(!d.memory);  // reaped: its memory can no longer be read
    CHECK(d.task_run_time == 250ms);
    CHECK(d.log_tail == "about to crash\n");
    CHECK_THAT(d.summary, Catch::Contains("SIGSEGV") && Catch::Contains("task 7") &&
                              Catch::Contains("about to crash"));

    CHECK(h.core.state_of(slot) == worker_state::starting);
    h.core.on_spawned(slot, 200, h.now);
    h.core.on_message(slot, wire::hello_msg{.protocol_version = wire::protocol_version}, h.now);

    // The replacement dies too, 10 ms after it became ready and before it answered
    // anything: now it waits in backoff, 100 ms +/- 20%.
    h.now += 10ms;
    h.core.on_exit(slot, {.signal = SIGSEGV}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::started, slot),
                                      expected::notifies(worker_event::kind::ready, slot),
                                      expected::notifies(worker_event::kind::exited, slot)}));
    CHECK(h.core.state_of(slot) == worker_state::backoff);
    auto next = h.core.next_deadline();
    REQUIRE(next);
    CHECK(*next - h.now >= 80ms);
    CHECK(*next - h.now <= 120ms);
    h.advance(79ms);
    CHECK_THAT(h.take(), actions_are({}));
    h.now = *next;
    h.core.on_timer(h.now);
    CHECK_THAT(h.take(), actions_are({spawn_action{slot}}));
    CHECK(h.core.stats().restarts == 2);
    CHECK(h.core.stats().deaths_by_signal == 2);
}

TEST_CASE("an idle worker's death restarts it without completing anything", "[core]") {
    harness h(two_workers());
    h.start_all_ready();
    h.core.on_exit(0, {.exit_code = 1}, h.now);
    // Nothing completes. Replaced at once: a worker that had been healthy fails for the first
    // time.
    CHECK_THAT(h.take(),
               actions_are({spawn_action{0}, expected::notifies(worker_event::kind::exited, 0)}));
    CHECK(h.core.state_of(0) == worker_state::starting);
    CHECK(h.core.stats().deaths_by_exit == 1);
    // New work goes to the other worker meanwhile.
    h.core.submit(1, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 1, .task = 1}}));
}

TEST_CASE("a running task past its deadline times out, and its worker gets SIGTERM, then SIGKILL",
          "[core]") {
    auto params = two_workers();
    params.stop_grace = 500ms;
    std::vector<int> probed;  // the pids whose memory the core asked for
    pool_core::process_probe probe;
    probe.memory = [&](int pid) -> std::optional<worker_memory> {
        probed.push_back(pid);
        return worker_memory{
            .private_bytes = 64 << 20, .pss_bytes = 65 << 20, .rss_bytes = 70 << 20};
    };
    probe.activity = [&](int) -> std::optional<worker_activity> {
        return worker_activity{.state = 'S', .wchan = "pipe_read", .syscall = "read"};
    };
    harness h(params, probe);
    h.start_all_ready();
    h.core.submit(3, "hang", 200ms, h.now);
    const slot_id slot = 1;
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = slot, .task = 3}}));

    // Not yet.
    h.advance(199ms);
    CHECK_THAT(h.take(), actions_are({}));

    // Deadline: the task completes with timeout at once, the worker is asked to stop.
    h.advance(1ms);
    const auto actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::completes(3, errc::timeout),
                                       signal_action{.slot = slot, .signo = SIGTERM}}));
    const auto& done = std::get<complete_action>(actions[0]);
    CHECK(done.result->diagnostics.task_run_time == 200ms);
    // Its memory, read before it is stopped.
    CHECK(probed == std::vector<int>{100 + static_cast<int>(slot)});
    REQUIRE(done.result->diagnostics.memory);
    CHECK(done.result->diagnostics.memory->private_bytes == 64u << 20);
    CHECK_THAT(done.result->diagnostics.summary,
               Catch::Contains("64.0 MiB of its own (private; PSS 65.0 MiB, RSS 70.0 MiB)"));
    // And what it was doing, read before that.
    REQUIRE(done.result->diagnostics.activity);
    CHECK(done.result->diagnostics.activity->wchan == "pipe_read");
    CHECK_THAT(done.result->diagnostics.summary,
               Catch::Contains("The kernel showed it sleeping in pipe_read, blocked in the "
                               "system call read."));
    CHECK(h.core.state_of(slot) == worker_state::stopping);

    // It ignores SIGTERM: after the grace it gets SIGKILL.
    h.advance(500ms);
    CHECK_THAT(h.take(), actions_are({signal_action{.slot = slot, .signo = SIGKILL}}));

    // Reaped: replaced at once, since the worker did nothing wrong by our count.
    h.core.on_exit(slot, {.signal = SIGKILL}, h.now);
    CHECK_THAT(h.take(), actions_are({spawn_action{slot},
                                      expected::notifies(worker_event::kind::exited, slot)}));
    CHECK(probed.size() == 1);  // a reaped pid is never read
    CHECK(h.core.stats().timed_out == 1);
    CHECK(h.core.stats().killed_by_pool == 1);
}

TEST_CASE("a queued task past its deadline times out without touching any worker", "[core]") {
    auto h = ready_harness(one_worker());
    h.core.submit(1, "sleep", 0ms, h.now);
    h.core.submit(2, "echo", 100ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 1}}));
    h.advance(100ms);
    // Task 2 fails, and no worker is signalled.
    const auto actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::completes(2, errc::timeout)}));
    CHECK_THAT(std::get<complete_action>(actions[0]).result->diagnostics.summary,
               Catch::Contains("in the queue"));
    CHECK(h.core.state_of(0) == worker_state::busy);
}

TEST_CASE("a full queue refuses a task at once with overloaded", "[core]") {
    auto params = one_worker();
    params.queue_limit = 2;
    harness h(params);
    h.start_all_ready();
    h.core.submit(1, "sleep", 0ms, h.now);  // running
    h.core.submit(2, "echo", 0ms, h.now);   // queued
    h.core.submit(3, "echo", 0ms, h.now);   // queued
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 1}}));
    h.core.submit(4, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({expected::completes(4, errc::overloaded)}));
    CHECK(h.core.stats().queue_depth == 2);
}

TEST_CASE("failed starts make the pool degraded, and queued and new tasks fail fast", "[core]") {
    auto params = one_worker();
    params.spawn_failures_until_degraded = 2;
    harness h(params);
    REQUIRE(h.core.start(h.now));
    CHECK_THAT(h.take(), actions_are({spawn_action{0}}));
    h.core.submit(1, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({}));  // it waits for the worker

    // First failed start: the task keeps waiting, and the start is tried again at once.
    h.core.on_spawned(0, 100, h.now);
    h.core.on_log(0, "cannot load model.pt\n");
    h.core.on_exit(0, {.exit_code = 3}, h.now);
    CHECK_THAT(h.take(),
               actions_are({expected::notifies(worker_event::kind::started, 0), spawn_action{0},
                            expected::notifies(worker_event::kind::exited, 0)}));
    CHECK(h.core.stats().failed_starts == 1);

    // Second: degraded; the queued task fails with the reason.
    h.core.on_spawned(0, 101, h.now);
    h.core.on_log(0, "cannot load model.pt\n");
    h.core.on_exit(0, {.exit_code = 3}, h.now);
    auto actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::notifies(worker_event::kind::started, 0),
                                       expected::notifies(worker_event::kind::degraded, 0),
                                       expected::completes(1, errc::spawn_failed),
                                       expected::notifies(worker_event::kind::exited, 0)}));
    CHECK_THAT(std::get<complete_action>(actions[2]).result->diagnostics.summary,
               Catch::Contains("exited with code 3") && Catch::Contains("cannot load model.pt"));
    CHECK(h.core.stats().degraded);

    // A new task fails at once too.
    h.core.submit(2, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({expected::completes(2, errc::spawn_failed)}));

    // The pool keeps trying; a worker that comes up ends the degraded state.
    h.restart_when_due(0, 102);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::started, 0),
                                      expected::notifies(worker_event::kind::ready, 0),
                                      expected::notifies(worker_event::kind::recovered, 0)}));
    CHECK_FALSE(h.core.stats().degraded);
    h.core.submit(3, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 3}}));
}

TEST_CASE("a worker that never says hello is killed at the spawn timeout", "[core]") {
    auto params = one_worker();
    params.load_timeout = 1000ms;
    harness h(params);
    REQUIRE(h.core.start(h.now));
    CHECK_THAT(h.take(), actions_are({spawn_action{0}}));
    h.core.on_spawned(0, 100, h.now);
    h.advance(1000ms);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::started, 0),
                                      signal_action{.slot = 0, .signo = SIGKILL}}));
    h.core.on_exit(0, {.signal = SIGKILL}, h.now);
    CHECK(h.core.stats().failed_starts == 1);
    // Tried again at once; a second failure would wait.
    CHECK(h.core.state_of(0) == worker_state::starting);
}

TEST_CASE("cancelling a queued task removes it: a running one is asked to stop", "[core]") {
    using boost::asio::cancellation_type;
    auto h = ready_harness(one_worker());
    h.core.submit(1, "sleep", 0ms, h.now);
    h.core.submit(2, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 1}}));

    // Queued: partial cancellation is enough.
    h.core.cancel_task(2, cancellation_type::partial, h.now);
    CHECK_THAT(h.take(),
               actions_are({expected::completes(2, boost::asio::error::operation_aborted)}));
    CHECK(h.core.stats().queue_depth == 0);

    // Running, partial: the worker is told; the caller waits for its answer.
    h.core.cancel_task(1, cancellation_type::partial, h.now);
    CHECK_THAT(h.take(), actions_are({send_cancel_action{.slot = 0, .task = 1}}));

    // A second request changes nothing.
    h.core.cancel_task(1, cancellation_type::total, h.now);
    CHECK_THAT(h.take(), actions_are({}));

    // The handler stopped on it: the caller gets operation_aborted; the worker stays.
    h.core.on_message(0,
                      wire::reply_msg{.id = 1,
                                      .ok = false,
                                      .error_type = std::string(wire::cancelled_error),
                                      .error_message = "stopped"},
                      h.now);
    const auto actions = h.take();
    REQUIRE_THAT(actions,
                 actions_are({expected::completes(1, boost::asio::error::operation_aborted)}));
    CHECK_THAT(std::get<complete_action>(actions[0]).result->diagnostics.summary,
               Catch::Contains("its handler stopped"));
    CHECK(h.core.state_of(0) == worker_state::idle);
}

TEST_CASE("a reply for the wrong task is a protocol error that kills the worker", "[core]") {
    harness h(two_workers());
    h.start_all_ready();
    h.core.submit(1, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 1, .task = 1}}));
    h.core.on_message(1, wire::reply_msg{.id = 99}, h.now);
    const auto actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::completes(1, errc::protocol_error),
                                       signal_action{.slot = 1, .signo = SIGKILL}}));
    CHECK_THAT(std::get<complete_action>(actions[0]).result->diagnostics.summary,
               Catch::Contains("Worker 101 sent a reply for task 99, which it was not running, "
                               "while running task 1 ('echo'); it was killed."));
}

TEST_CASE("a closed channel waits for the exit, so the caller learns how the worker died",
          "[core]") {
    auto params = two_workers();
    params.stop_grace = 300ms;
    harness h(params);
    h.start_all_ready();
    h.core.submit(1, "crash", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 1, .task = 1}}));

    // EOF on the channel first, then the exit: worker_died with the signal, not protocol.
    h.core.on_channel_closed(1, "closed its channel", h.now);
    CHECK_THAT(h.take(), actions_are({}));
    h.now += 1ms;
    h.core.on_exit(1, {.signal = SIGBUS}, h.now);
    auto actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::completes(1, errc::worker_died), spawn_action{1},
                                       expected::notifies(worker_event::kind::exited, 1)}));
    CHECK(std::get<complete_action>(actions[0]).result->diagnostics.signal == SIGBUS);

    // The other worker closes its channel and keeps running: protocol error after the grace.
    h.core.submit(2, "close_channel", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 2}}));
    h.core.on_channel_closed(0, "closed its channel", h.now);
    h.advance(300ms);
    actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::completes(2, errc::protocol_error),
                                       signal_action{.slot = 0, .signo = SIGKILL}}));
    CHECK_THAT(std::get<complete_action>(actions[0]).result->diagnostics.summary,
               Catch::Contains("did not exit"));
}

TEST_CASE("shutdown finishes admitted tasks, refuses new ones, then stops every worker", "[core]") {
    auto h = ready_harness(one_worker());
    h.core.submit(1, "sleep", 0ms, h.now);
    h.core.submit(2, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 1}}));

    h.core.shutdown(h.now);
    CHECK_THAT(h.take(), actions_are({}));  // still busy, one queued
    h.core.submit(3, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({expected::completes(3, errc::shutting_down)}));

    h.core.on_message(0, wire::reply_msg{.id = 1}, h.now);
    CHECK_THAT(h.take(),
               actions_are({expected::completes(1), send_request_action{.slot = 0, .task = 2}}));

    // Last task done: the worker is asked to exit.
    h.core.on_message(0, wire::reply_msg{.id = 2}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::completes(2), send_shutdown_action{0}}));

    // Reaped: the run is over and nothing restarts.
    h.core.on_exit(0, {.exit_code = 0}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::exited, 0),
                                      run_finished_action{}}));
    CHECK(h.core.stats().workers_stopped == 1);
}

TEST_CASE("stop aborts every task and kills every worker", "[core]") {
    harness h(two_workers());
    h.start_all_ready();
    h.core.submit(1, "sleep", 0ms, h.now);
    h.core.submit(2, "sleep", 0ms, h.now);
    h.core.submit(3, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 1, .task = 1},
                                      send_request_action{.slot = 0, .task = 2}}));
    h.core.stop(h.now);
    const auto aborted = boost::asio::error::operation_aborted;
    CHECK_THAT(h.take(),
               actions_are({expected::completes(1, aborted), expected::completes(2, aborted),
                            expected::completes(3, aborted), signal_action{0, SIGKILL},
                            signal_action{1, SIGKILL}}));
    h.core.on_exit(0, {.signal = SIGKILL}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::exited, 0)}));
    h.core.on_exit(1, {.signal = SIGKILL}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::exited, 1),
                                      run_finished_action{}}));
}

TEST_CASE("a task submitted before the pool runs waits for the workers it starts", "[core]") {
    harness h(two_workers());
    h.core.submit(1, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({}));
    REQUIRE(h.core.start(h.now));
    CHECK_THAT(h.take(), actions_are({spawn_action{0}, spawn_action{1}}));
    h.core.on_spawned(0, 100, h.now);
    h.core.on_message(0, wire::hello_msg{.protocol_version = wire::protocol_version}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::started, 0),
                                      expected::notifies(worker_event::kind::ready, 0),
                                      send_request_action{.slot = 0, .task = 1}}));
}

TEST_CASE("shutdown before start finishes at once and fails queued tasks", "[core]") {
    harness h(two_workers());
    h.core.submit(1, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({}));  // no worker starts before the pool runs
    h.core.shutdown(h.now);
    CHECK_THAT(h.take(),
               actions_are({expected::completes(1, errc::shutting_down), run_finished_action{}}));
    CHECK_FALSE(h.core.start(h.now));
}

TEST_CASE("a worker that speaks another protocol version is refused at hello", "[core]") {
    auto params = one_worker();
    harness h(params);
    REQUIRE(h.core.start(h.now));
    CHECK_THAT(h.take(), actions_are({spawn_action{0}}));
    h.core.on_spawned(0, 100, h.now);
    h.core.on_message(0, wire::hello_msg{.protocol_version = 99}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::started, 0),
                                      signal_action{.slot = 0, .signo = SIGKILL}}));
    CHECK(h.core.stats().failed_starts == 1);
}

TEST_CASE("with prefetch, a busy worker gets its next task ahead of time", "[core][prefetch]") {
    auto h = ready_harness(one_worker(1));
    h.core.submit(1, "echo", 0ms, h.now);
    h.core.submit(2, "echo", 0ms, h.now);
    h.core.submit(3, "echo", 0ms, h.now);
    // One running, one prefetched, one still queued.
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 1},
                                      send_request_action{.slot = 0, .task = 2}}));
    CHECK(h.core.stats().queue_depth == 1);

    // The first reply completes task 1; task 2 is now running and task 3 is prefetched.
    h.core.on_message(0, wire::reply_msg{.id = 1}, h.now);
    CHECK_THAT(h.take(),
               actions_are({expected::completes(1), send_request_action{.slot = 0, .task = 3}}));
    CHECK(h.core.state_of(0) == worker_state::busy);

    // Replies must come in order.
    h.core.on_message(0, wire::reply_msg{.id = 3}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::completes(2, errc::protocol_error),
                                      signal_action{.slot = 0, .signo = SIGKILL}}));
}

TEST_CASE("a prefetched task goes back to the head of the queue when its worker dies",
          "[core][prefetch]") {
    auto h = ready_harness(one_worker(2));
    h.core.submit(1, "crash", 0ms, h.now);
    h.core.submit(2, "echo", 0ms, h.now);
    h.core.submit(3, "echo", 0ms, h.now);
    h.core.submit(4, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 1},
                                      send_request_action{.slot = 0, .task = 2},
                                      send_request_action{.slot = 0, .task = 3}}));
    // Only the running task fails; the worker is replaced at once.
    h.core.on_exit(0, {.signal = SIGSEGV}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::completes(1, errc::worker_died), spawn_action{0},
                                      expected::notifies(worker_event::kind::exited, 0)}));
    CHECK(h.core.stats().queue_depth == 3);

    // The replacement gets them in their original order.
    h.core.on_spawned(0, 200, h.now);
    h.core.on_message(0, wire::hello_msg{.protocol_version = wire::protocol_version}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::started, 0),
                                      expected::notifies(worker_event::kind::ready, 0),
                                      send_request_action{.slot = 0, .task = 2},
                                      send_request_action{.slot = 0, .task = 3},
                                      send_request_action{.slot = 0, .task = 4}}));
}

TEST_CASE("a prefetched task past its deadline times out without touching its worker",
          "[core][prefetch]") {
    auto h = ready_harness(one_worker(1));
    h.core.submit(1, "sleep", 0ms, h.now);
    h.core.submit(2, "echo", 100ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 1},
                                      send_request_action{.slot = 0, .task = 2}}));
    h.advance(100ms);
    // Task 2 fails; its worker is not signalled.
    const auto actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::completes(2, errc::timeout)}));
    CHECK_THAT(std::get<complete_action>(actions[0]).result->diagnostics.summary,
               Catch::Contains("before it started"));

    // Both replies still come; the late one is dropped and the worker is idle after it.
    h.core.on_message(0, wire::reply_msg{.id = 1}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::completes(1)}));
    h.core.on_message(0, wire::reply_msg{.id = 2, .ok = false, .error_type = "late"}, h.now);
    CHECK_THAT(h.take(), actions_are({}));
    CHECK(h.core.state_of(0) == worker_state::idle);
}

TEST_CASE("cancelling a prefetched task tells its worker and drops its reply", "[core][prefetch]") {
    auto h = ready_harness(one_worker(1));
    h.core.submit(1, "sleep", 0ms, h.now);
    h.core.submit(2, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 1},
                                      send_request_action{.slot = 0, .task = 2}}));
    // The worker is told, the caller is answered at once, and nothing is signalled.
    h.core.cancel_task(2, boost::asio::cancellation_type::total, h.now);
    CHECK_THAT(h.take(),
               actions_are({send_cancel_action{.slot = 0, .task = 2},
                            expected::completes(2, boost::asio::error::operation_aborted)}));
    // Task 1's reply completes it; task 2's is dropped.
    h.core.on_message(0, wire::reply_msg{.id = 1}, h.now);
    h.core.on_message(0, wire::reply_msg{.id = 2}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::completes(1)}));
}
