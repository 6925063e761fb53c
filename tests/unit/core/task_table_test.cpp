// The task table, one operation at a time: the queue, what each worker was sent, deadlines,
// and ending a task in one place.
#include "core/task_table.hpp"

#include "core/retry_policy.hpp"
#include "recorder.hpp"

#include <catch2/catch.hpp>

using namespace torchpool::core;
using namespace torchpool::core::test;
using namespace std::chrono_literals;
using ids = std::vector<task_id>;

TEST_CASE("tasks wait in order, are sent to a worker, and the first sent is the running one",
          "[task_table]") {
    task_table t(2);
    t.add(1, "a", 0ms, t0);
    t.add(2, "b", 0ms, t0);
    CHECK(t.queued() == 2);

    CHECK(t.send_next(1) == 1);
    CHECK(t.send_next(1) == 2);
    CHECK(t.queued() == 0);
    CHECK(t.running(1) == task_id{1});
    CHECK(t.running(0) == std::nullopt);
    CHECK(t.find(2)->slot == slot_id{1});

    // The worker answers the first; the second is running now.
    CHECK(t.answered(1).id == 1);
    t.end(1);
    CHECK(t.running(1) == task_id{2});
    CHECK(t.find(1) == nullptr);
    CHECK(t.describe(2) == "task 2 ('b')");
    CHECK(t.describe(1) == "task 1");
}

TEST_CASE("a task completed while queued is skipped when the queue is taken", "[task_table]") {
    task_table t(1);
    t.add(1, "a", 0ms, t0);
    t.add(2, "b", 0ms, t0);
    t.end(1);  // cancelled while queued
    CHECK(t.queued() == 1);
    CHECK(t.send_next(0) == 2);
    CHECK(t.queued() == 0);
}

TEST_CASE("a worker that will answer nothing more gives back what it had not started",
          "[task_table]") {
    task_table t(1);
    for (task_id id : {1, 2, 3, 4}) {
        t.add(id, "m", 0ms, t0);
    }
    t.add(5, "m", 0ms, t0);
    t.send_next(0);
    t.send_next(0);
    t.send_next(0);
    t.abandon(0, 3);  // timed out before it started
    t.end(3);
    t.end(1);  // the running one was completed with the worker's death

    t.release(0);
    CHECK(t.sent(0).empty());
    CHECK(t.queued_ids() == ids{2, 4, 5});
    // Task 2 goes back to the head of the queue, before 4 and 5.
    CHECK(t.send_next(0) == 2);
    CHECK(t.send_next(0) == 4);
}

TEST_CASE("deadlines are due in order and leave with their task", "[task_table]") {
    task_table t(1);
    t.add(1, "slow", 300ms, t0);
    t.add(2, "fast", 100ms, t0);
    t.add(3, "none", 0ms, t0);
    CHECK(t.next_deadline() == t0 + 100ms);
    CHECK(t.due(t0 + 99ms) == std::nullopt);
    CHECK(t.due(t0 + 100ms) == task_id{2});
    t.end(2);
    CHECK(t.due(t0 + 100ms) == std::nullopt);
    CHECK(t.next_deadline() == t0 + 300ms);
    t.end(1);
    CHECK(t.next_deadline() == std::nullopt);
    CHECK(t.ids() == ids{3});
}

TEST_CASE("a task's failures are kept until it ends, and the end hands them over", "[task_table]") {
    task_table t(1);
    t.add(1, "m", 0ms, t0);
    t.send_next(0);
    CHECK(t.failed_under(1, {.worker_pid = 10}).size() == 1);
    t.release(0);
    t.retry(1);
    t.send_next(0);
    CHECK(t.failed_under(1, {.worker_pid = 11}).size() == 2);
    const auto failures = t.end(1);
    REQUIRE(failures.size() == 2);
    CHECK(failures[1].worker_pid == 11);
    CHECK(t.end(1).empty());  // ended once
    CHECK(t.empty());
}

TEST_CASE("after a worker fails under a task: cancelled, poison, retry or fail, in that order",
          "[task_table]") {
    const failure_context base{.failures = 1, .poison_deaths = 2, .retries_left = 1};
    CHECK(decide(base) == after_failure::retry);
    auto c = base;
    c.cancel_requested = true;
    c.failures = 5;
    CHECK(decide(c) == after_failure::cancelled);  // its caller's word wins
    c = base;
    c.failures = 2;
    CHECK(decide(c) == after_failure::poison);  // even with retries left
    c.poison_deaths = 0;
    CHECK(decide(c) == after_failure::retry);  // poison tasks are off
    c.before_deadline = false;
    CHECK(decide(c) == after_failure::fail);
    c = base;
    c.pool_stopping = true;
    CHECK(decide(c) == after_failure::fail);
    c = base;
    c.retries_left = 0;
    CHECK(decide(c) == after_failure::fail);
}
