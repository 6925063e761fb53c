// The worker lifecycle alone, over the units it drives (no coordinator): a slot's start, its
// hello, its stop and its exit, and what an end leaves for the coordinator (a task that
// fails, a start that failed) as a worker_end, one event at a time.
#include "core/worker_lifecycle.hpp"

#include "core/sizing.hpp"
#include "recorder.hpp"

#include <catch2/catch.hpp>

#include <signal.h>

using namespace torchpool;
using namespace torchpool::core;
using namespace torchpool::core::test;
using namespace std::chrono_literals;

namespace {

struct fixture {
    explicit fixture(pool_params p, process_probe probe = {})
        : params(std::move(p)),
          report_(false, out),
          restart(params),
          tasks(slot_capacity(params)),
          workers(params),
          heartbeat(slot_capacity(params), params.heartbeat_interval, params.heartbeat_timeout),
          memory(slot_capacity(params), params.memory),
          inspect(std::move(probe), params.memory, workers, tasks),
          slots(params, workers, phase, report_),
          server(params, report_, out),
          life(params, workers, tasks, slots, restart, server, heartbeat, memory, inspect, phase,
               report_, out) {
        phase.start();
        life.park_all();
    }

    /// Slot `s` is started, spawned (pid 100 + s) and ready.
    void ready(slot_id s) {
        life.wait_for_start(s, t0);
        life.spawned(s, 100 + static_cast<int>(s), t0);
        REQUIRE_FALSE(life.hello(s, {.protocol_version = wire::protocol_version}, t0));
        take(out);
    }
    /// Task `id` is sent to the ready worker of `s`.
    void run(slot_id s, task_id id) {
        tasks.add(id, "infer", 0ms, t0);
        workers.task_sent(s);
        CHECK(tasks.send_next(s) == id);
    }

    pool_params params;
    action_queue out;
    report report_;
    restart_policy restart;
    pool_phase phase;
    task_table tasks;
    worker_set workers;
    heartbeat_monitor heartbeat;
    memory_watch memory;
    inspector inspect;
    slot_policy slots;
    fork_server_supervisor server;
    worker_lifecycle life;
};

pool_params two_workers() {
    return {
        .worker = {.executable = "/bin/true"}, .workers = 2, .load_timeout = 5s, .stop_grace = 1s};
}

}  // namespace

TEST_CASE("a slot starts when its turn comes, loads until its deadline and is ready on hello",
          "[core][worker_lifecycle]") {
    fixture f(two_workers());
    f.life.wait_for_start(0, t0);
    CHECK(take(f.out) == std::vector<action>{spawn_action{0}});
    CHECK(f.workers.status(0) == worker_status::starting);

    f.life.spawned(0, 100, t0 + 10ms);
    CHECK(f.workers[0].child.due() == timer_purpose::start_deadline);
    CHECK(f.workers[0].child.timer() == t0 + 10ms + 5s);

    // Another protocol: refused in words, and it is still starting.
    const auto problem = f.life.hello(0, {.protocol_version = wire::protocol_version + 1}, t0);
    REQUIRE(problem);
    CHECK_THAT(*problem, Catch::Contains("protocol version"));
    CHECK(f.workers.status(0) == worker_status::starting);

    CHECK_FALSE(f.life.hello(0, {.protocol_version = wire::protocol_version}, t0 + 20ms));
    CHECK(f.workers.status(0) == worker_status::idle);
    CHECK(f.workers[0].child.due() == timer_purpose::none);
    // A second hello is a protocol problem.
    CHECK(f.life.hello(0, {.protocol_version = wire::protocol_version}, t0 + 30ms));
}

TEST_CASE("a worker that exits while loading leaves a failed start, and no task",
          "[core][worker_lifecycle]") {
    fixture f(two_workers());
    f.life.wait_for_start(0, t0);
    f.life.spawned(0, 100, t0);
    take(f.out);
    f.workers[0].child.append_log("ImportError: no module named torch\n");
    const auto end = f.life.exited(0, {.exit_code = 3}, t0 + 1s);
    REQUIRE(end);
    CHECK_FALSE(end->task);
    REQUIRE(end->failed_start);
    CHECK_THAT(*end->failed_start, Catch::Contains("exited with code 3"));
    CHECK_THAT(*end->failed_start, Catch::Contains("no module named torch"));
    CHECK(end->pid == 100);
    CHECK(std::string(end->was) == "starting");

    // After its exit it restarts after its backoff (the first restart is at once).
    f.life.after_exit(0, t0 + 1s);
    CHECK(f.workers[0].child.pid() == 0);
    CHECK(take(f.out) == std::vector<action>{spawn_action{0}});

    // A slot with no process has nothing to end.
    CHECK_FALSE(f.life.exited(1, {.exit_code = 0}, t0));
}

TEST_CASE("a worker that dies under its task leaves that task's failure, with the cause",
          "[core][worker_lifecycle]") {
    fixture f(two_workers());
    f.ready(0);
    f.ready(1);
    f.run(0, 7);
    f.run(1, 8);

    const auto died = f.life.exited(0, {.signal = SIGSEGV, .core_dumped = true}, t0 + 2s);
    REQUIRE(died);
    REQUIRE(died->task);
    CHECK(died->task->id == 7);
    CHECK(died->task->error == errc::worker_died);
    CHECK(died->task->result.worker_pid == 100);
    CHECK(died->task->result.diagnostics.signal == SIGSEGV);
    CHECK_THAT(died->task->result.diagnostics.summary, Catch::Contains("SIGSEGV"));
    CHECK_FALSE(died->failed_start);

    // Killed by the kernel's OOM killer in its cgroup: a memory limit, not a crash.
    const auto oom = f.life.exited(1, {.signal = SIGKILL, .oom_killed = true}, t0 + 2s);
    REQUIRE(oom);
    REQUIRE(oom->task);
    CHECK(oom->task->id == 8);
    CHECK(oom->task->error == errc::memory_limit);
}

TEST_CASE("a protocol error ends a running worker's task, and a loading one's start",
          "[core][worker_lifecycle]") {
    fixture f(two_workers());
    f.ready(0);
    f.run(0, 7);
    const auto end = f.life.protocol_error(0, "sent a malformed message", t0 + 1s);
    REQUIRE(end);
    REQUIRE(end->task);
    CHECK(end->task->error == errc::protocol_error);
    CHECK_THAT(end->task->result.diagnostics.summary, Catch::Contains("malformed message"));
    CHECK_FALSE(end->failed_start);

    f.life.wait_for_start(1, t0);
    f.life.spawned(1, 101, t0);
    const auto start = f.life.protocol_error(1, "sent a malformed message", t0 + 1s);
    REQUIRE(start);
    CHECK_FALSE(start->task);
    CHECK(start->failed_start);

    // Once it is being stopped, what it still says no longer matters.
    f.life.stop(0, stop_reason::protocol, true, t0 + 1s);
    CHECK_FALSE(f.life.protocol_error(0, "sent a malformed message", t0 + 1s));
}

TEST_CASE(
    "stopping asks first and kills after stop_grace, and a closed channel is due as a "
    "protocol error",
    "[core][worker_lifecycle]") {
    fixture f(two_workers());
    f.ready(0);
    f.ready(1);

    f.life.stop(0, stop_reason::deadline, false, t0);
    CHECK(take(f.out) == std::vector<action>{signal_action{0, SIGTERM}});
    CHECK(f.workers[0].child.due() == timer_purpose::stop_grace);
    CHECK_FALSE(f.life.timer_due(0, t0 + 1s));
    CHECK(take(f.out) == std::vector<action>{signal_action{0, SIGKILL}});

    f.life.channel_closed(1, "end of stream", t0);
    CHECK(f.workers[1].child.due() == timer_purpose::channel_grace);
    const auto closed = f.life.timer_due(1, t0 + 1s);
    REQUIRE(closed);
    CHECK_THAT(*closed, Catch::Contains("end of stream"));
}
