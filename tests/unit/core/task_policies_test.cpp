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

// The only task completion among `actions`.
complete_action completion(const std::vector<action>& actions) {
    auto done = harness::only<complete_action>(actions);
    REQUIRE(done.size() == 1);
    return done[0];
}

}  // namespace

TEST_CASE("an idempotent task whose worker dies runs again on another worker", "[core]") {
    auto params = two_workers();
    params.poison.deaths = 0;  // this test is about retries alone
    auto h = ready_harness(params);
    h.core.submit(1, "flaky", retries(1), h.now);
    const auto first = harness::only<send_request_action>(h.take()).at(0);
    CHECK(first.attempt == 1);

    // Its worker dies under it: not completed, sent to the other worker as attempt 2.
    h.core.on_exit(first.slot, {.signal = SIGSEGV}, h.now);
    auto actions = h.take();
    CHECK(harness::only<complete_action>(actions).empty());
    const auto again = harness::only<send_request_action>(actions).at(0);
    CHECK(again.slot != first.slot);
    CHECK(again.attempt == 2);
    CHECK(h.core.stats().retried == 1);

    // It answers: success, with both runs listed.
    h.core.on_message(again.slot, wire::reply_msg{.id = 1}, h.now);
    const auto done = completion(h.take());
    CHECK(!done.error);
    REQUIRE(done.result->attempts.size() == 2);
    CHECK(done.result->attempts[0].worker_pid == 100 + static_cast<int>(first.slot));
    CHECK(done.result->attempts[0].error == errc::worker_died);
    CHECK_THAT(done.result->attempts[0].summary, Catch::Contains("SIGSEGV"));
    CHECK(done.result->attempts[1].worker_pid == 100 + static_cast<int>(again.slot));
    CHECK(!done.result->attempts[1].error);
    CHECK(h.core.stats().worker_died == 0);  // no task ended that way
}

TEST_CASE("retries run out, and a task is never retried after its deadline", "[core]") {
    auto params = two_workers();
    params.poison.deaths = 0;
    auto h = ready_harness(params);

    // One retry: two deaths fail it, with both runs listed.
    h.core.submit(1, "crash", retries(1), h.now);
    auto slot = harness::only<send_request_action>(h.take()).at(0).slot;
    h.core.on_exit(slot, {.signal = SIGKILL}, h.now);
    slot = harness::only<send_request_action>(h.take()).at(0).slot;
    h.core.on_exit(slot, {.signal = SIGKILL}, h.now);
    auto done = completion(h.take());
    CHECK(done.error == errc::worker_died);
    CHECK(done.result->attempts.size() == 2);
    CHECK_THAT(done.result->diagnostics.summary, Catch::Contains("run 2 times"));

    // Past its deadline it is not run again, whatever its retries.
    restarted_ready(h, 300);
    h.core.submit(2, "slow", {.timeout = 100ms, .retries = 5}, h.now);
    slot = harness::only<send_request_action>(h.take()).at(0).slot;
    h.now += 150ms;  // its deadline passed while the worker was being killed
    h.core.on_exit(slot, {.signal = SIGKILL}, h.now);
    done = completion(h.take());
    CHECK(done.error == errc::worker_died);
    CHECK(done.result->attempts.empty());  // it ran once
}

TEST_CASE("a task under which two workers died is a poison task, and can be quarantined",
          "[core]") {
    auto params = two_workers();
    params.poison = {.deaths = 2, .quarantine = 8};
    auto h = ready_harness(params);
    REQUIRE(h.core.needs_fingerprint(1));
    h.core.submit(1, "poison", retries(5, 0xabc), h.now);
    auto slot = harness::only<send_request_action>(h.take()).at(0).slot;
    h.core.on_exit(slot, {.signal = SIGSEGV}, h.now);
    slot = harness::only<send_request_action>(h.take()).at(0).slot;
    h.core.on_exit(slot, {.exit_code = 1}, h.now);

    // Retries were left, but two deaths make it poison: each is listed.
    auto actions = h.take();
    auto done = completion(actions);
    CHECK(done.error == errc::poison_task);
    REQUIRE(done.result->attempts.size() == 2);
    CHECK(done.result->attempts[0].error == errc::worker_died);
    CHECK(done.result->attempts[1].error == errc::worker_died);
    const auto& summary = done.result->diagnostics.summary;
    CHECK_THAT(summary, Catch::Contains("poison task"));
    CHECK_THAT(summary, Catch::Contains("SIGSEGV"));
    CHECK_THAT(summary, Catch::Contains("exited with code 1"));
    CHECK_THAT(summary, Catch::Contains("quarantined"));
    CHECK(h.core.stats().poison_tasks == 1);
    CHECK(harness::only<send_request_action>(actions).empty());

    // Submitted again: refused at once, no worker spent on it. Another task still runs.
    restarted_ready(h, 300);
    h.core.submit(2, "poison", retries(0, 0xabc), h.now);
    actions = h.take();
    done = completion(actions);
    CHECK(done.error == errc::poison_task);
    CHECK_THAT(done.result->diagnostics.summary, Catch::Contains("quarantine"));
    CHECK(harness::only<send_request_action>(actions).empty());
    CHECK(h.core.stats().quarantined == 1);
    h.core.submit(3, "fine", retries(0, 0xdef), h.now);
    CHECK(harness::only<send_request_action>(h.take()).size() == 1);
}

TEST_CASE("a queued task of a higher priority is sent first: FIFO within a priority", "[core]") {
    auto h = ready_harness(one_worker());
    h.core.submit(1, "busy", 0ms, h.now);
    h.core.submit(2, "low", {.priority = 0}, h.now);
    h.core.submit(3, "normal", {.priority = 1}, h.now);
    h.core.submit(4, "high a", {.priority = 2}, h.now);
    h.core.submit(5, "high b", {.priority = 2}, h.now);
    h.take();
    std::vector<task_id> order;
    task_id running = 1;
    for (int i = 0; i < 4; ++i) {
        h.core.on_message(0, wire::reply_msg{.id = running}, h.now);
        running = harness::only<send_request_action>(h.take()).at(0).task;
        order.push_back(running);
    }
    CHECK(order == std::vector<task_id>{4, 5, 3, 2});
}

TEST_CASE("a task that waits for room is admitted when there is room, or ends by its deadline",
          "[core]") {
    auto params = one_worker();
    params.queue_limit = 1;
    auto h = ready_harness(params);
    h.core.submit(1, "busy", 0ms, h.now);  // running
    h.core.submit(2, "queued", 0ms, h.now);
    h.take();

    // The queue is full: one that fails at once, one that waits, one that waits with a
    // deadline.
    h.core.submit(3, "fails", 0ms, h.now);
    CHECK(completion(h.take()).error == errc::overloaded);
    h.core.submit(4, "waits", {.wait_for_room = true}, h.now);
    h.core.submit(5, "waits briefly", {.timeout = 50ms, .wait_for_room = true}, h.now);
    CHECK(h.take().empty());
    CHECK(h.core.stats().waiting_for_room == 2);

    // The deadline of the second passes while it waits.
    h.advance(60ms);
    auto done = completion(h.take());
    CHECK(done.task == 5);
    CHECK(done.error == errc::timeout);

    // Task 1 answers: task 2 is sent, which makes room for task 4, queued now.
    h.core.on_message(0, wire::reply_msg{.id = 1}, h.now);
    auto actions = h.take();
    CHECK(harness::only<send_request_action>(actions).at(0).task == 2);
    CHECK(h.core.stats().waiting_for_room == 0);
    CHECK(h.core.stats().queue_depth == 1);
    h.core.on_message(0, wire::reply_msg{.id = 2}, h.now);
    CHECK(harness::only<send_request_action>(h.take()).at(0).task == 4);
}

TEST_CASE("a terminal cancellation completes at once: the worker has a grace to answer", "[core]") {
    using boost::asio::cancellation_type;
    auto params = two_workers();
    params.cancel_grace = 500ms;
    auto h = ready_harness(params);
    h.core.submit(1, "stoppable", 0ms, h.now);
    h.core.submit(2, "stubborn", 0ms, h.now);
    const auto sends = harness::only<send_request_action>(h.take());
    const slot_id stoppable = sends.at(0).slot;
    const slot_id stubborn = sends.at(1).slot;

    // Both are cancelled (terminal): completed now, each worker told.
    h.core.cancel_task(1, cancellation_type::terminal, h.now);
    h.core.cancel_task(2, cancellation_type::all, h.now);
    auto actions = h.take();
    auto done = harness::only<complete_action>(actions);
    REQUIRE(done.size() == 2);
    CHECK(done[0].error == boost::asio::error::operation_aborted);
    CHECK_THAT(done[0].result->diagnostics.summary, Catch::Contains("cancel_grace"));
    CHECK(harness::only<send_cancel_action>(actions).size() == 2);
    CHECK(harness::only<signal_action>(actions).empty());

    // One answers within the grace: it stays. The other does not: killed after the grace.
    h.advance(100ms);
    h.core.on_message(
        stoppable,
        wire::reply_msg{.id = 1, .ok = false, .error_type = std::string(wire::cancelled_error)},
        h.now);
    CHECK(harness::only<complete_action>(h.take()).empty());  // already completed
    CHECK(h.core.state_of(stoppable) == worker_state::idle);
    h.advance(400ms);
    actions = h.take();
    const auto signals = harness::only<signal_action>(actions);
    REQUIRE(signals.size() == 1);
    CHECK(signals[0] == signal_action{stubborn, SIGKILL});
    CHECK(h.core.state_of(stoppable) == worker_state::idle);
}

TEST_CASE("a running task whose caller asked to stop it is not retried when its worker dies",
          "[core]") {
    using boost::asio::cancellation_type;
    auto h = ready_harness(two_workers());
    h.core.submit(1, "work", retries(3), h.now);
    const auto slot = harness::only<send_request_action>(h.take()).at(0).slot;
    h.core.cancel_task(1, cancellation_type::total, h.now);
    h.take();
    h.core.on_exit(slot, {.signal = SIGKILL}, h.now);
    auto actions = h.take();
    CHECK(completion(actions).error == boost::asio::error::operation_aborted);
    CHECK(harness::only<send_request_action>(actions).empty());
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
