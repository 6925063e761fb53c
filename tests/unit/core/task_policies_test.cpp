// Scenario tests of what the pool does for a task beyond running it once: retries of
// idempotent tasks, poison tasks and their quarantine, priorities, waiting for room in a full
// queue, and cancellation of a running task. One event at a time, simulated clock.
#include "core/log_lines.hpp"
#include "core/pool_core.hpp"
#include "core_harness.hpp"
#include <torchpool/error.hpp>

#include <boost/asio/error.hpp>

#include <catch2/catch.hpp>

#include <signal.h>

using namespace torchpool;
using namespace torchpool::core;
using namespace torchpool::core::testing;

namespace {

task_options retries(unsigned n, std::uint64_t fp = 0) {
    return {.retries = n, .fingerprint = fp};
}

// Workers that died healthy were restarted at once: their new processes start and say hello.
void restarted_ready(harness& h, int first_pid) {
    for (slot_id s = 0; s < h.params.workers; ++s) {
        if (h.core.state_of(s) == worker_state::starting) {
            h.core.on_spawned(s, first_pid + static_cast<int>(s), h.now);
            h.core.on_message(s, wire::hello_msg{.protocol_version = wire::protocol_version},
                              h.now);
        }
    }
    h.take();
}

// The completion at `at` in `actions` (whose sequence the test has checked).
const complete_action& completion(const std::vector<action>& actions, std::size_t at = 0) {
    REQUIRE(at < actions.size());
    REQUIRE(std::holds_alternative<complete_action>(actions[at]));
    return std::get<complete_action>(actions[at]);
}

constexpr auto exited = worker_event::kind::exited;

}  // namespace

TEST_CASE("an idempotent task whose worker dies runs again on another worker", "[core]") {
    auto params = two_workers();
    params.poison.deaths = 0;  // this test is about retries alone
    auto h = ready_harness(params);
    h.core.submit(1, "flaky", retries(1), h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 1, .task = 1, .attempt = 1}}));

    // Its worker dies under it: not completed, sent to the other worker as attempt 2 (and
    // the dead one replaced).
    h.core.on_exit(1, {.signal = SIGSEGV}, h.now);
    CHECK_THAT(h.take(), actions_are({spawn_action{1}, expected::notifies(exited, 1),
                                      send_request_action{.slot = 0, .task = 1, .attempt = 2}}));
    CHECK(h.core.stats().retried == 1);

    // It answers: success, with both runs listed.
    h.core.on_message(0, wire::reply_msg{.id = 1}, h.now);
    const auto actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::completes(1)}));
    const auto& done = completion(actions);
    REQUIRE(done.result->attempts.size() == 2);
    CHECK(done.result->attempts[0].worker_pid == 101);
    CHECK(done.result->attempts[0].error == errc::worker_died);
    CHECK_THAT(done.result->attempts[0].summary, Catch::Contains("SIGSEGV"));
    CHECK(done.result->attempts[1].worker_pid == 100);
    CHECK(!done.result->attempts[1].error);
    CHECK(h.core.stats().worker_died == 0);  // no task ended that way
}

TEST_CASE("retries run out, and a task is never retried after its deadline", "[core]") {
    auto params = two_workers();
    params.poison.deaths = 0;
    auto h = ready_harness(params);

    // One retry: two deaths fail it, with both runs listed.
    h.core.submit(1, "crash", retries(1), h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 1, .task = 1}}));
    h.core.on_exit(1, {.signal = SIGKILL}, h.now);
    CHECK_THAT(h.take(), actions_are({spawn_action{1}, expected::notifies(exited, 1),
                                      send_request_action{.slot = 0, .task = 1, .attempt = 2}}));
    h.core.on_exit(0, {.signal = SIGKILL}, h.now);
    auto actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::completes(1, errc::worker_died), spawn_action{0},
                                       expected::notifies(exited, 0)}));
    CHECK(completion(actions).result->attempts.size() == 2);
    CHECK_THAT(completion(actions).result->diagnostics.summary, Catch::Contains("run 2 times"));

    // Past its deadline it is not run again, whatever its retries. (Its worker, a replacement
    // that failed soon after it started, waits in backoff: no spawn at once.)
    restarted_ready(h, 300);
    h.core.submit(2, "slow", {.timeout = 100ms, .retries = 5}, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 1, .task = 2}}));
    h.now += 150ms;  // its deadline passed while the worker was being killed
    h.core.on_exit(1, {.signal = SIGKILL}, h.now);
    actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::completes(2, errc::worker_died),
                                       expected::notifies(exited, 1)}));
    CHECK(completion(actions).result->attempts.empty());  // it ran once
}

TEST_CASE("a task under which two workers died is a poison task, and can be quarantined",
          "[core]") {
    auto params = two_workers();
    params.poison = {.deaths = 2, .quarantine = 8};
    auto h = ready_harness(params);
    REQUIRE(h.core.needs_fingerprint(1));
    h.core.submit(1, "poison", retries(5, 0xabc), h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 1, .task = 1}}));
    h.core.on_exit(1, {.signal = SIGSEGV}, h.now);
    CHECK_THAT(h.take(), actions_are({spawn_action{1}, expected::notifies(exited, 1),
                                      send_request_action{.slot = 0, .task = 1, .attempt = 2}}));
    h.core.on_exit(0, {.exit_code = 1}, h.now);

    // Retries were left, but two deaths make it poison: each is listed. It is not sent again.
    auto actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::notifies(worker_event::kind::poison_task, 0),
                                       expected::completes(1, errc::poison_task), spawn_action{0},
                                       expected::notifies(exited, 0)}));
    const auto& done = completion(actions, 1);
    REQUIRE(done.result->attempts.size() == 2);
    CHECK(done.result->attempts[0].error == errc::worker_died);
    CHECK(done.result->attempts[1].error == errc::worker_died);
    const auto& summary = done.result->diagnostics.summary;
    CHECK_THAT(summary, Catch::Contains("poison task"));
    CHECK_THAT(summary, Catch::Contains("SIGSEGV"));
    CHECK_THAT(summary, Catch::Contains("exited with code 1"));
    CHECK_THAT(summary, Catch::Contains("quarantined"));
    CHECK(h.core.stats().poison_tasks == 1);

    // Submitted again: refused at once, no worker spent on it. Another task still runs.
    restarted_ready(h, 300);
    h.core.submit(2, "poison", retries(0, 0xabc), h.now);
    actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::completes(2, errc::poison_task)}));
    CHECK_THAT(completion(actions).result->diagnostics.summary, Catch::Contains("quarantine"));
    CHECK(h.core.stats().quarantined == 1);
    h.core.submit(3, "fine", retries(0, 0xdef), h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 1, .task = 3}}));
}

TEST_CASE("a queued task of a higher priority is sent first: FIFO within a priority", "[core]") {
    auto h = ready_harness(one_worker());
    h.core.submit(1, "busy", 0ms, h.now);
    h.core.submit(2, "low", {.priority = 0}, h.now);
    h.core.submit(3, "normal", {.priority = 1}, h.now);
    h.core.submit(4, "high a", {.priority = 2}, h.now);
    h.core.submit(5, "high b", {.priority = 2}, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 1}}));
    // Each reply sends the next: 4 and 5 (high, in order), then 3, then 2.
    task_id running = 1;
    for (const task_id next : {4, 5, 3, 2}) {
        h.core.on_message(0, wire::reply_msg{.id = running}, h.now);
        CHECK_THAT(h.take(), actions_are({expected::completes(running),
                                          send_request_action{.slot = 0, .task = next}}));
        running = next;
    }
}

TEST_CASE("a task that waits for room is admitted when there is room, or ends by its deadline",
          "[core]") {
    auto params = one_worker();
    params.queue_limit = 1;
    auto h = ready_harness(params);
    h.core.submit(1, "busy", 0ms, h.now);  // running
    h.core.submit(2, "queued", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 1}}));

    // The queue is full: one that fails at once, one that waits, one that waits with a
    // deadline.
    h.core.submit(3, "fails", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({expected::completes(3, errc::overloaded)}));
    h.core.submit(4, "waits", {.wait_for_room = true}, h.now);
    h.core.submit(5, "waits briefly", {.timeout = 50ms, .wait_for_room = true}, h.now);
    CHECK_THAT(h.take(), actions_are({}));
    CHECK(h.core.stats().waiting_for_room == 2);

    // The deadline of the second passes while it waits.
    h.advance(60ms);
    CHECK_THAT(h.take(), actions_are({expected::completes(5, errc::timeout)}));

    // Task 1 answers: task 2 is sent, which makes room for task 4, queued now.
    h.core.on_message(0, wire::reply_msg{.id = 1}, h.now);
    CHECK_THAT(h.take(),
               actions_are({expected::completes(1), send_request_action{.slot = 0, .task = 2}}));
    CHECK(h.core.stats().waiting_for_room == 0);
    CHECK(h.core.stats().queue_depth == 1);
    h.core.on_message(0, wire::reply_msg{.id = 2}, h.now);
    CHECK_THAT(h.take(),
               actions_are({expected::completes(2), send_request_action{.slot = 0, .task = 4}}));
}

TEST_CASE("a terminal cancellation completes at once: the worker has a grace to answer", "[core]") {
    using boost::asio::cancellation_type;
    auto params = two_workers();
    params.cancel_grace = 500ms;
    auto h = ready_harness(params);
    h.core.submit(1, "stoppable", 0ms, h.now);
    h.core.submit(2, "stubborn", 0ms, h.now);
    const slot_id stoppable = 1;
    const slot_id stubborn = 0;
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = stoppable, .task = 1},
                                      send_request_action{.slot = stubborn, .task = 2}}));

    // Both are cancelled (terminal): completed now, each worker told, none signalled.
    h.core.cancel_task(1, cancellation_type::terminal, h.now);
    h.core.cancel_task(2, cancellation_type::all, h.now);
    const auto aborted = boost::asio::error::operation_aborted;
    auto actions = h.take();
    REQUIRE_THAT(actions, actions_are({send_cancel_action{.slot = stoppable, .task = 1},
                                       expected::completes(1, aborted),
                                       send_cancel_action{.slot = stubborn, .task = 2},
                                       expected::completes(2, aborted)}));
    CHECK_THAT(completion(actions, 1).result->diagnostics.summary, Catch::Contains("cancel_grace"));

    // One answers within the grace: it stays (its task completed already). The other does
    // not: killed after the grace, with a notice.
    h.advance(100ms);
    h.core.on_message(
        stoppable,
        wire::reply_msg{.id = 1, .ok = false, .error_type = std::string(wire::cancelled_error)},
        h.now);
    CHECK_THAT(h.take(), actions_are({}));
    CHECK(h.core.state_of(stoppable) == worker_state::idle);
    h.advance(400ms);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::notice, stubborn),
                                      signal_action{.slot = stubborn, .signo = SIGKILL}}));
    CHECK(h.core.state_of(stoppable) == worker_state::idle);
}

TEST_CASE("a running task whose caller asked to stop it is not retried when its worker dies",
          "[core]") {
    using boost::asio::cancellation_type;
    auto h = ready_harness(two_workers());
    h.core.submit(1, "work", retries(3), h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 1, .task = 1}}));
    h.core.cancel_task(1, cancellation_type::total, h.now);
    CHECK_THAT(h.take(), actions_are({send_cancel_action{.slot = 1, .task = 1}}));
    // Its worker dies: the task completes as cancelled, and is not sent again.
    h.core.on_exit(1, {.signal = SIGKILL}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::completes(1, boost::asio::error::operation_aborted),
                                      spawn_action{1}, expected::notifies(exited, 1)}));
}

TEST_CASE("output is split into lines, long ones in pieces, the last at the end", "[core]") {
    line_splitter lines;
    std::vector<std::string> seen;
    const auto emit = [&](std::string_view l) { seen.emplace_back(l); };
    lines.feed("one\ntw", emit);
    lines.feed("o\n\nthree", emit);
    CHECK(seen == std::vector<std::string>{"one", "two", ""});
    lines.flush(emit);
    CHECK(seen.back() == "three");
    seen.clear();
    const std::string longer(line_splitter::max_line + 10, 'x');
    lines.feed(longer + "\n", emit);
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].size() == line_splitter::max_line);
    CHECK(seen[1].size() == 10);
}

TEST_CASE("a task retried while the pool drains gets a worker again after every worker stopped",
          "[core]") {
    auto params = two_workers();
    params.poison.deaths = 0;
    auto h = ready_harness(params);
    h.core.submit(2, "m", retries(0), h.now);
    h.core.submit(1, "flaky", retries(1), h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 1, .task = 2, .attempt = 1},
                                      send_request_action{.slot = 0, .task = 1, .attempt = 1}}));
    // Shrunk to one while both are busy: the worker of slot 0 leaves after its task.
    CHECK(h.core.resize(1, h.now) == 1);
    h.take();
    h.core.shutdown(h.now);
    // The other answers; nothing is queued, so it is asked to exit, and does.
    h.core.on_message(1, wire::reply_msg{.id = 2}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::completes(2), send_shutdown_action{1}}));
    h.core.on_exit(1, {.exit_code = 0}, h.now);
    h.take();
    // The leaving worker dies under task 1: it is retried, and its slot is parked. Every
    // worker has stopped, yet the task was admitted: a worker starts for it.
    h.core.on_exit(0, {.signal = SIGSEGV}, h.now);
    const auto actions = h.take();
    CHECK(std::count_if(actions.begin(), actions.end(), [](const action& a) {
              return std::holds_alternative<spawn_action>(a);
          }) == 1);
    CHECK_FALSE(h.core.finished());
    CHECK(h.core.stats().queue_depth == 1);
}
