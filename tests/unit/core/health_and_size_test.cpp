// Scenario tests of the pool's watch over its workers and its size: heartbeats, elastic
// growth, memory readings, loading workers, recycling and resizing. One event at a time,
// simulated clock, every action an event produces asserted.
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

TEST_CASE(
    "an idle worker is sent heartbeats: one that stops answering takes no task and is "
    "replaced",
    "[core][heartbeat]") {
    auto params = two_workers();
    params.heartbeat_interval = 1000ms;
    params.heartbeat_timeout = 400ms;
    pool_core::process_probe probe;
    probe.activity = [](int) -> std::optional<worker_activity> {
        return worker_activity{.state = 'T'};
    };
    params.on_worker_event = [](const worker_event&) {};  // events wanted
    harness h(params, probe);
    REQUIRE(h.core.start(h.now));
    CHECK_THAT(h.take(), actions_are({spawn_action{0}, spawn_action{1}}));
    for (const slot_id s : {0, 1}) {
        h.core.on_spawned(s, 100 + static_cast<int>(s), h.now);
        wire::hello_msg hello{.protocol_version = wire::protocol_version,
                              .capabilities = {std::string(wire::answers_heartbeats)}};
        h.core.on_message(s, std::move(hello), h.now);
    }
    h.take();

    // Idle for the interval: both are sent a heartbeat (sweeps run every 200 ms).
    h.advance(1000ms);
    CHECK_THAT(h.take(), actions_are({send_heartbeat_action{.slot = 0, .sequence = 1},
                                      send_heartbeat_action{.slot = 1, .sequence = 2}}));

    // Slot 0 answers; slot 1 does not. A task now goes to slot 0 only; the other waits, not
    // sent to the silent one.
    h.core.on_message(0, wire::heartbeat_msg{1}, h.now);
    h.core.submit(1, "echo", 0ms, h.now);
    h.core.submit(2, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 1}}));
    CHECK(h.core.stats().queue_depth == 1);

    // Past the timeout: slot 1 is unresponsive, asked to stop (SIGTERM), and the event says
    // what the kernel showed.
    h.advance(400ms);
    const auto actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::notifies(worker_event::kind::unresponsive, 1),
                                       signal_action{.slot = 1, .signo = SIGTERM}}));
    CHECK(h.core.stats().unresponsive == 1);
    CHECK_THAT(std::get<notify_action>(actions[0]).event.description,
               Catch::Contains("did not answer a heartbeat within 400 ms") &&
                   Catch::Contains("stopped (by SIGSTOP or a debugger)"));

    // Reaped and replaced at once; the queued task goes to the replacement.
    h.core.on_exit(1, {.signal = SIGTERM}, h.now);
    CHECK_THAT(h.take(),
               actions_are({spawn_action{1}, expected::notifies(worker_event::kind::exited, 1)}));
    h.core.on_spawned(1, 300, h.now);
    h.core.on_message(1, wire::hello_msg{.protocol_version = wire::protocol_version}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::started, 1),
                                      expected::notifies(worker_event::kind::ready, 1),
                                      send_request_action{.slot = 1, .task = 2}}));
}

TEST_CASE("a worker that stops answering while the pool drains is still found out and replaced",
          "[core][heartbeat]") {
    auto params = one_worker();
    params.heartbeat_interval = 1000ms;
    params.heartbeat_timeout = 400ms;
    harness h(params);
    REQUIRE(h.core.start(h.now));
    h.take();
    h.core.on_spawned(0, 100, h.now);
    h.core.on_message(0,
                      wire::hello_msg{.protocol_version = wire::protocol_version,
                                      .capabilities = {std::string(wire::answers_heartbeats)}},
                      h.now);
    h.take();
    h.advance(1000ms);
    CHECK_THAT(h.take(), actions_are({send_heartbeat_action{.slot = 0, .sequence = 1}}));
    // A task waits for the silent worker; then the pool is shut down, which lets admitted
    // tasks finish.
    h.core.submit(1, "echo", 0ms, h.now);
    h.core.shutdown(h.now);
    CHECK(h.take().empty());
    // Heartbeats still count while it drains: the worker is unresponsive, and replaced.
    h.advance(400ms);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::unresponsive, 0),
                                      signal_action{.slot = 0, .signo = SIGTERM}}));
    h.core.on_exit(0, {.signal = SIGTERM}, h.now);
    CHECK_THAT(h.take(),
               actions_are({spawn_action{0}, expected::notifies(worker_event::kind::exited, 0)}));
    h.core.on_spawned(0, 101, h.now);
    h.core.on_message(0, wire::hello_msg{.protocol_version = wire::protocol_version}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::started, 0),
                                      expected::notifies(worker_event::kind::ready, 0),
                                      send_request_action{.slot = 0, .task = 1}}));
    h.core.on_message(0, wire::reply_msg{.id = 1}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::completes(1), send_shutdown_action{0}}));
}

TEST_CASE("an elastic pool grows while tasks wait, within max_workers and the memory budget",
          "[core][elastic]") {
    auto params = one_worker();
    params.max_workers = 3;
    params.memory.hard_limit_bytes = 100u << 20;
    std::uint64_t available = 1u << 30;
    pool_core::process_probe probe;
    probe.available_memory = [&]() -> std::optional<std::uint64_t> { return available; };
    harness h(params, probe);
    h.start_all_ready();

    // One busy, two waiting: two more workers are started, no more than max_workers.
    h.core.submit(1, "sleep", 0ms, h.now);
    h.core.submit(2, "sleep", 0ms, h.now);
    h.core.submit(3, "sleep", 0ms, h.now);
    h.core.submit(4, "sleep", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 1}, spawn_action{1},
                                      spawn_action{2}}));
    CHECK(h.core.stats().workers_target == 3);

    // With less memory available than a worker may take, it does not grow.
    harness tight(params, probe);
    tight.start_all_ready();
    available = 50u << 20;
    tight.core.submit(1, "sleep", 0ms, tight.now);
    tight.core.submit(2, "sleep", 0ms, tight.now);
    CHECK_THAT(tight.take(), actions_are({send_request_action{.slot = 0, .task = 1}}));
    CHECK(tight.core.stats().workers_target == 1);
}

TEST_CASE("a worker read just before its task grew is read again once idle", "[core][memory]") {
    std::uint64_t held = 8u << 20;
    int reads = 0;
    pool_core::process_probe probe{.memory = [&](int) {
        ++reads;
        return std::optional<worker_memory>(worker_memory{.private_bytes = held});
    }};
    auto params = one_worker();
    params.memory = {.soft_limit_bytes = 32u << 20, .sample_interval = 100ms};
    harness h(params, std::move(probe));
    h.start_all_ready();
    h.core.submit(1, "allocate", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 1}}));

    // A tick reads it while busy: little memory.
    h.advance(100ms);
    REQUIRE(reads == 1);
    // The task grows and ends 10 ms later: too soon after that read to read it again now.
    held = 64u << 20;
    h.now += 10ms;
    h.core.on_message(0, wire::reply_msg{.id = 1}, h.now);
    CHECK(reads == 1);
    CHECK(h.core.stats().recycled == 0);
    CHECK_THAT(h.take(), actions_are({expected::completes(1)}));
    // The next tick reads it, idle as it is: over its soft limit, it is recycled.
    h.advance(100ms);
    CHECK(reads == 2);
    CHECK(h.core.stats().recycled == 1);
    // Its replacement starts first (a spare slot); the hand-over is its own scenario below.
    CHECK_THAT(h.take(),
               actions_are({expected::notifies(worker_event::kind::recycled, 0), spawn_action{1}}));
    // Idle and read since: never read again.
    h.advance(100ms);
    h.advance(100ms);
    CHECK(reads == 2);
}

TEST_CASE("near a limit, a worker is read again with its tensor shared memory told apart",
          "[core][memory]") {
    int cheap = 0, exact = 0;
    std::uint64_t own = 8u << 20;
    pool_core::process_probe probe{
        // The cheap reading counts 56 MiB of results the host has not read as its own.
        .memory =
            [&](int) {
                ++cheap;
                return std::optional<worker_memory>(
                    worker_memory{.private_bytes = own + (56u << 20)});
            },
        .memory_exactly =
            [&](int) {
                ++exact;
                return std::optional<worker_memory>(
                    worker_memory{.private_bytes = own, .shared_memory_bytes = 56u << 20});
            }};
    auto params = one_worker();
    params.memory = {.soft_limit_bytes = 48u << 20, .sample_interval = 100ms};
    harness h(params, std::move(probe));
    h.start_all_ready();
    h.core.submit(1, "fill", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 1}}));
    h.now += 10ms;
    h.core.on_message(0, wire::reply_msg{.id = 1}, h.now);
    CHECK(cheap == 1);
    CHECK(exact == 1);  // 64 MiB by the cheap figure is near 48: read exactly, 8 MiB
    CHECK(h.core.stats().recycled == 0);
    CHECK_THAT(h.take(), actions_are({expected::completes(1)}));

    // Its own memory grows past the limit: recycled, on the exact figure.
    own = 50u << 20;
    h.core.submit(2, "fill", 0ms, h.now);
    h.take();
    h.now += 200ms;
    h.core.on_message(0, wire::reply_msg{.id = 2}, h.now);
    CHECK(exact == 2);
    CHECK(h.core.stats().recycled == 1);
}

TEST_CASE("a loading worker past its load_timeout gets more time while it uses CPU, and no more",
          "[core]") {
    auto params = one_worker();
    params.load_timeout = 1000ms;
    params.load_extensions = 2;
    std::chrono::nanoseconds cpu{0};
    harness h(params, {.cpu_time = [&](int) { return std::optional(cpu); }});
    REQUIRE(h.core.start(h.now));
    CHECK_THAT(h.take(), actions_are({spawn_action{0}}));
    h.core.on_spawned(0, 100, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::started, 0)}));

    SECTION("slow, but making progress: it becomes ready") {
        // A busy machine: the worker computed for 40 ms in its first second.
        cpu = 40ms;
        h.advance(1000ms);
        CHECK_THAT(h.take(), actions_are({}));
        CHECK(h.core.state_of(0) == worker_state::starting);
        cpu = 90ms;
        h.advance(1000ms);
        CHECK_THAT(h.take(), actions_are({}));
        h.core.on_message(0, wire::hello_msg{.protocol_version = wire::protocol_version}, h.now);
        CHECK(h.core.state_of(0) == worker_state::idle);
        CHECK(h.core.stats().failed_starts == 0);
        CHECK(h.core.stats().load_extensions == 2);
    }
    SECTION("stuck: no CPU time since the last look, so it is killed as a failed start") {
        cpu = 40ms;
        h.advance(1000ms);  // progress: more time
        CHECK_THAT(h.take(), actions_are({}));
        h.advance(1000ms);  // none since: killed
        CHECK_THAT(h.take(), actions_are({signal_action{.slot = 0, .signo = SIGKILL}}));
        h.core.on_exit(0, {.signal = SIGKILL}, h.now);
        CHECK(h.core.stats().failed_starts == 1);
        CHECK_THAT(h.core.stats().last_start_error,
                   Catch::Contains("did not become ready within 2.0 s (pool_params::load_timeout, "
                                   "given again 1 time for using CPU: "
                                   "pool_params::load_extensions), then used no CPU time for "
                                   "1.0 s and was killed"));
    }
    SECTION("busy forever: the extensions run out") {
        for (int i = 1; i <= 2; ++i) {
            cpu += 500ms;
            h.advance(1000ms);
            CHECK_THAT(h.take(), actions_are({}));
        }
        cpu += 500ms;
        h.advance(1000ms);
        CHECK_THAT(h.take(), actions_are({signal_action{.slot = 0, .signo = SIGKILL}}));
    }
}

TEST_CASE(
    "recycling hands over: the replacement starts first, and the old worker leaves once "
    "it is ready, after its task",
    "[core][recycle]") {
    auto params = one_worker();
    params.recycle.max_tasks = 2;
    auto h = ready_harness(params);
    constexpr auto K = worker_event::kind::recycled;
    h.core.submit(1, "echo", 0ms, h.now);
    h.core.submit(2, "echo", 0ms, h.now);
    h.core.submit(3, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 0, .task = 1}}));
    h.core.on_message(0, wire::reply_msg{.id = 1}, h.now);
    CHECK_THAT(h.take(),
               actions_are({expected::completes(1), send_request_action{.slot = 0, .task = 2}}));
    // Its second task done, it has served its share: a replacement starts in the spare slot,
    // and the old worker serves on meanwhile (task 3).
    h.core.on_message(0, wire::reply_msg{.id = 2}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::completes(2), expected::notifies(K, 0),
                                      spawn_action{1}, send_request_action{.slot = 0, .task = 3}}));
    // The replacement is ready: the old worker is asked to leave after what it runs.
    h.core.on_spawned(1, 200, h.now);
    h.core.on_message(1, wire::hello_msg{.protocol_version = wire::protocol_version}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::started, 1),
                                      expected::notifies(worker_event::kind::ready, 1)}));
    h.core.on_message(0, wire::reply_msg{.id = 3}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::completes(3), send_shutdown_action{0}}));
    // It exits: not restarted; its slot is the spare again, and the replacement serves.
    h.core.on_exit(0, {.exit_code = 0}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::exited, 0)}));
    h.core.submit(4, "echo", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 1, .task = 4}}));
    CHECK(h.core.stats().recycled == 1);
    CHECK(h.core.stats().workers_target == 1);
}

TEST_CASE("resize shrinks by stopping idle workers first, busy ones after their task",
          "[core][resize]") {
    auto params = two_workers();
    params.workers = 3;
    auto h = ready_harness(params);
    constexpr auto exited = worker_event::kind::exited;
    h.core.submit(1, "sleep", 0ms, h.now);
    h.core.submit(2, "sleep", 0ms, h.now);
    CHECK_THAT(h.take(), actions_are({send_request_action{.slot = 2, .task = 1},
                                      send_request_action{.slot = 1, .task = 2}}));
    // From 3 to 1: the idle one leaves now, one busy one after its task.
    CHECK(h.core.resize(1, h.now) == 1);
    CHECK_THAT(h.take(), actions_are({send_shutdown_action{0},
                                      expected::notifies(worker_event::kind::notice)}));
    h.core.on_message(1, wire::reply_msg{.id = 2}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::completes(2), send_shutdown_action{1}}));
    // They exit and are not restarted; the one left serves.
    h.core.on_exit(0, {.exit_code = 0}, h.now);
    h.core.on_exit(1, {.exit_code = 0}, h.now);
    CHECK_THAT(h.take(),
               actions_are({expected::notifies(exited, 0), expected::notifies(exited, 1)}));
    h.core.on_message(2, wire::reply_msg{.id = 1}, h.now);
    h.core.submit(3, "echo", 0ms, h.now);
    CHECK_THAT(h.take(),
               actions_are({expected::completes(1), send_request_action{.slot = 2, .task = 3}}));
    CHECK(h.core.stats().workers_target == 1);
}
