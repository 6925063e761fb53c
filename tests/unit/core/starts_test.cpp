// Scenario tests of how workers start: staged (max_concurrent_starts), and through the fork
// server (its start, death, failures and shutdown). One event at a time, simulated clock,
// every action an event produces asserted.
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

TEST_CASE("no more workers start at once than max_concurrent_starts: each ready one lets the next",
          "[core][starts]") {
    auto params = two_workers();
    params.workers = 5;
    params.max_concurrent_starts = 2;
    harness h(params);
    REQUIRE(h.core.start(h.now));
    CHECK_THAT(h.take(), actions_are({spawn_action{0}, spawn_action{1}}));  // three wait
    CHECK(h.core.stats().workers_waiting == 3);
    // The first says hello: one more may start.
    h.core.on_spawned(0, 100, h.now);
    h.core.on_message(0, wire::hello_msg{.protocol_version = wire::protocol_version}, h.now);
    CHECK_THAT(h.take(),
               actions_are({expected::notifies(worker_event::kind::started, 0),
                            expected::notifies(worker_event::kind::ready, 0), spawn_action{2}}));
    // The second dies before it is ready: its turn goes to the next waiting one, and it
    // (its first failure, so tried again at once) waits behind the others.
    h.core.on_spawned(1, 101, h.now);
    h.core.on_exit(1, {.exit_code = 1}, h.now);
    CHECK_THAT(h.take(),
               actions_are({expected::notifies(worker_event::kind::started, 1), spawn_action{3},
                            expected::notifies(worker_event::kind::exited, 1)}));
    CHECK(h.core.stats().workers_waiting == 2);
}

namespace {

pool_params forked(std::size_t workers) {
    auto params = two_workers();
    params.workers = workers;
    params.worker.start = start_mode::fork_server;
    return params;
}

const wire::hello_msg server_hello{.protocol_version = wire::protocol_version,
                                   .capabilities = {"fork-server"}};

// Starts the pool of `h`; its fork server (pid 50) starts and says hello, and the workers of
// every slot are asked of it.
void server_ready(harness& h) {
    REQUIRE(h.core.start(h.now));
    h.core.on_server_spawned(50, h.now);
    h.core.on_server_hello(server_hello, h.now);
    std::vector<expected> want = {start_server_action{},
                                  expected::notifies(worker_event::kind::fork_server_started),
                                  expected::notifies(worker_event::kind::fork_server_ready)};
    for (slot_id s = 0; s < h.params.workers; ++s) {
        want.push_back(fork_action{s});
    }
    CHECK_THAT(h.take(), actions_matcher(std::move(want)));
}

}  // namespace

TEST_CASE("fork-server mode: workers are asked of the server once it is ready", "[core][fork]") {
    harness h(forked(3));
    REQUIRE(h.core.start(h.now));
    // The server starts first; no worker is asked for before its hello.
    CHECK_THAT(h.take(), actions_are({start_server_action{}}));
    h.core.on_server_spawned(50, h.now);
    h.core.on_server_hello(server_hello, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::fork_server_started),
                                      expected::notifies(worker_event::kind::fork_server_ready),
                                      fork_action{0}, fork_action{1}, fork_action{2}}));
    CHECK(h.core.stats().fork_server_ready);
    // Each worker the server hands over is awaited for its slot, then serves as usual.
    CHECK(h.core.awaiting_fork(0));
    h.core.on_spawned(0, 60, h.now);
    CHECK_FALSE(h.core.awaiting_fork(0));
    h.core.on_message(0, wire::hello_msg{.protocol_version = wire::protocol_version}, h.now);
    CHECK(h.core.state_of(0) == worker_state::idle);
}

TEST_CASE(
    "fork-server mode: the server's death asks again for the workers it had not made, "
    "and leaves running workers alone",
    "[core][fork]") {
    harness h(forked(2));
    server_ready(h);
    // Slot 0 is up; slot 1 is still being made when the server dies (killed by a signal).
    h.core.on_spawned(0, 60, h.now);
    h.core.on_message(0, wire::hello_msg{.protocol_version = wire::protocol_version}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::started, 0),
                                      expected::notifies(worker_event::kind::ready, 0)}));
    h.core.on_server_exit({.signal = SIGKILL}, h.now);
    CHECK(h.core.state_of(0) == worker_state::idle);  // carries on
    CHECK(h.core.awaiting_fork(1) == false);          // waits for the next server
    auto s = h.core.stats();
    CHECK(s.fork_server_deaths == 1);
    CHECK_FALSE(s.fork_server_ready);
    CHECK(s.workers_waiting == 1);
    // The server had been healthy: restarted at once. Once it is ready, slot 1 is asked for
    // again.
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::fork_server_exited),
                                      start_server_action{}}));
    h.core.on_server_spawned(51, h.now);
    h.core.on_server_hello(server_hello, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::fork_server_started),
                                      expected::notifies(worker_event::kind::fork_server_ready),
                                      fork_action{1}}));
    CHECK(h.core.stats().fork_server_starts == 2);
}

TEST_CASE(
    "fork-server mode: a server that never says hello is killed at the spawn timeout, "
    "and servers that keep failing make the pool degraded",
    "[core][fork]") {
    auto params = forked(1);
    params.spawn_failures_until_degraded = 2;
    harness h(params);
    REQUIRE(h.core.start(h.now));
    CHECK_THAT(h.take(), actions_are({start_server_action{}}));
    h.core.on_server_spawned(50, h.now);
    h.core.submit(1, "forward", 0ms, h.now);
    h.advance(params.load_timeout);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::fork_server_started),
                                      stop_server_action{.kill = true}}));
    h.core.on_server_exit({.signal = SIGKILL}, h.now);
    CHECK_FALSE(h.core.stats().degraded);  // one failure is not yet enough
    // Tried again at once; the second start fails too: the server exits before its hello.
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::fork_server_exited),
                                      start_server_action{}}));
    h.core.on_server_spawned(51, h.now);
    h.core.on_server_log("cannot load the model\n");
    h.core.on_server_exit({.exit_code = 3}, h.now);
    CHECK(h.core.stats().degraded);
    const auto actions = h.take();
    REQUIRE_THAT(actions, actions_are({expected::notifies(worker_event::kind::fork_server_started),
                                       expected::notifies(worker_event::kind::fork_server_exited),
                                       expected::notifies(worker_event::kind::degraded),
                                       expected::completes(1, errc::spawn_failed)}));
    CHECK_THAT(std::get<complete_action>(actions[3]).result->diagnostics.summary,
               Catch::Contains("exited with code 3") && Catch::Contains("cannot load the model"));
}

TEST_CASE("fork-server mode: shutdown stops the workers first, then the server", "[core][fork]") {
    harness h(forked(1));
    server_ready(h);
    h.core.on_spawned(0, 60, h.now);
    h.core.on_message(0, wire::hello_msg{.protocol_version = wire::protocol_version}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::started, 0),
                                      expected::notifies(worker_event::kind::ready, 0)}));
    // The workers first; the server is not stopped before its workers.
    h.core.shutdown(h.now);
    CHECK_THAT(h.take(), actions_are({send_shutdown_action{0}}));
    // Then the server is asked to exit.
    h.core.on_exit(0, {.exit_code = 0}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::exited, 0),
                                      stop_server_action{.kill = false}}));
    CHECK_FALSE(h.core.finished());
    h.core.on_server_exit({.exit_code = 0}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::fork_server_exited),
                                      run_finished_action{}}));
    CHECK(h.core.finished());
}

TEST_CASE("fork-server mode: a shutdown while the server waits to restart still ends the run",
          "[core][fork]") {
    harness h(forked(1));
    server_ready(h);
    h.core.on_spawned(0, 60, h.now);
    h.core.on_message(0, wire::hello_msg{.protocol_version = wire::protocol_version}, h.now);
    h.take();
    // The server dies on its own, is restarted at once, and its new process dies before its
    // hello: a failed start, so it waits for its restart in backoff, with no process.
    h.core.on_server_exit({.signal = SIGKILL}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::fork_server_exited),
                                      start_server_action{}}));
    h.core.on_server_spawned(51, h.now);
    h.core.on_server_exit({.exit_code = 1}, h.now);
    h.take();
    REQUIRE(h.core.fork_server_pid() == 0);
    REQUIRE(h.core.next_deadline());  // its restart
    // Shutdown: the worker exits, and the server has no process to ask: the run ends now
    // rather than waiting for an exit that will never come.
    h.core.shutdown(h.now);
    CHECK_THAT(h.take(), actions_are({send_shutdown_action{0}}));
    h.core.on_exit(0, {.exit_code = 0}, h.now);
    CHECK_THAT(h.take(), actions_are({expected::notifies(worker_event::kind::exited, 0),
                                      run_finished_action{}}));
    CHECK(h.core.finished());
    CHECK_FALSE(h.core.next_deadline());
}
