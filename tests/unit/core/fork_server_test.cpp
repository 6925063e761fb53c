// The fork server's lifecycle, one event at a time, with the exact action each one asks for.
#include "core/fork_server.hpp"

#include "recorder.hpp"

#include <catch2/catch.hpp>

#include <signal.h>

using namespace torchpool;
using namespace torchpool::core;
using namespace torchpool::core::test;
using namespace std::chrono_literals;
using actions = std::vector<action>;

namespace {

struct server_harness {
    explicit server_harness(bool events = false)
        : params{.worker = {.executable = "/bin/true", .start = start_mode::fork_server},
                 .load_timeout = 5000ms,
                 .stop_grace = 500ms},
          rep(events, out),
          server(params, rep, out) {}

    // Started, its process up, hello said.
    void make_ready(int pid = 77) {
        server.start(false, t0);
        server.spawned(pid, t0);
        REQUIRE_FALSE(server.hello({.protocol_version = wire::protocol_version}, t0 + 1s));
        take(out);
    }

    pool_params params;
    action_queue out;
    report rep;
    fork_server_supervisor server;
};

}  // namespace

TEST_CASE("the fork server starts, says hello and is ready", "[fork_server]") {
    server_harness h(true);
    CHECK(h.server.enabled());

    h.server.start(false, t0);
    CHECK(take(h.out) == actions{start_server_action{}});
    CHECK(h.rep.counters().fork_server_starts == 1);
    CHECK(h.server.child().state() == child_state::starting);
    CHECK(h.server.child().timer() == t0 + 10s);  // spawn_timeout: to have a process

    h.server.spawned(77, t0 + 10ms);
    CHECK(h.server.child().timer() == t0 + 5010ms);  // load_timeout: to say hello
    CHECK(take(h.out) == actions{notify_action{{worker_event::kind::fork_server_started, 0, 77,
                                                "fork server 77 started"}}});

    CHECK_FALSE(h.server.hello({.protocol_version = wire::protocol_version}, t0 + 1010ms));
    CHECK(h.server.ready());
    CHECK(take(h.out) ==
          actions{notify_action{{worker_event::kind::fork_server_ready, 0, 77,
                                 "fork server 77 is ready, 1.0 s after it started"}}});

    // A second hello is refused, and says why.
    CHECK(h.server.hello({.protocol_version = wire::protocol_version}, t0 + 2s) ==
          "sent a second hello message");
}

TEST_CASE("a fork server of another protocol version is refused at hello", "[fork_server]") {
    server_harness h;
    h.server.start(false, t0);
    h.server.spawned(77, t0);
    const auto problem = h.server.hello({.protocol_version = wire::protocol_version + 1}, t0);
    REQUIRE(problem);
    CHECK_THAT(*problem, Catch::Contains("protocol version"));
    CHECK_FALSE(h.server.ready());
}

TEST_CASE("a fork server silent past load_timeout is killed, and its end says so",
          "[fork_server]") {
    server_harness h;
    h.server.start(false, t0);
    h.server.spawned(77, t0);
    take(h.out);

    h.server.on_timer(false, {}, t0 + 4999ms);
    CHECK(take(h.out).empty());
    h.server.on_timer(false, {}, t0 + 5000ms);
    CHECK(take(h.out) == actions{stop_server_action{true}});

    const auto why = h.server.describe_end({.signal = SIGKILL}, t0 + 5001ms);
    CHECK(why ==
          "the fork server (pid 77) did not become ready within 5.0 s "
          "(pool_params::load_timeout) and was killed. It wrote nothing to stdout or stderr.");
    const auto end = h.server.gone(why, false, t0 + 5001ms);
    CHECK_FALSE(end.for_good);
    CHECK(end.was_failed_start);
    CHECK(h.server.child().state() == child_state::backoff);
}

TEST_CASE("a fork server loading past load_timeout gets more time while it uses CPU",
          "[fork_server]") {
    server_harness h;
    h.server.start(false, t0);
    h.server.spawned(77, t0);
    take(h.out);
    std::chrono::nanoseconds cpu = 3s;  // loading LibTorch and a model, on a busy machine
    const auto probe = [&](int pid) {
        CHECK(pid == 77);
        return std::optional(cpu);
    };
    h.server.on_timer(false, probe, t0 + 5000ms);
    CHECK(take(h.out).empty());  // computing: 5 s more
    CHECK(h.server.child().timer() == t0 + 10000ms);
    h.server.on_timer(false, probe, t0 + 10000ms);  // no CPU since: stuck
    CHECK(take(h.out) == actions{stop_server_action{true}});
    CHECK(h.server.describe_end({.signal = SIGKILL}, t0 + 10001ms) ==
          "the fork server (pid 77) did not become ready within 10.0 s "
          "(pool_params::load_timeout, given again 1 time for using CPU: "
          "pool_params::load_extensions), then used no CPU time for 5.0 s and was killed. It "
          "wrote nothing to stdout or stderr.");
}

TEST_CASE(
    "load progress: more time only for CPU used since the last look, a bounded number of times",
    "[fork_server]") {
    load_progress load(2);
    CHECK_FALSE(load.extend(std::nullopt));  // unknown: no more time
    CHECK_FALSE(load.extend(0ns));           // no CPU at all
    CHECK(load.extend(5ms));
    CHECK_FALSE(load.extend(5ms));  // none since
    CHECK(load.stuck());
    CHECK(load.extend(6ms));
    CHECK_FALSE(load.extend(1s));  // out of extensions
    CHECK_FALSE(load.stuck());
    CHECK(load.extensions() == 2);
    load.reset();
    CHECK(load.extensions() == 0);
    CHECK(load.extend(1ms));
}

TEST_CASE("a ready fork server that dies on its own is a death, not a failed start, and restarts",
          "[fork_server]") {
    server_harness h;
    h.make_ready();
    const auto why = h.server.describe_end({.signal = SIGSEGV}, t0 + 3s);
    CHECK(why ==
          "the fork server (pid 77) was killed by signal SIGSEGV after 3.0 s. It wrote nothing "
          "to stdout or stderr.");
    const auto end = h.server.gone(why, false, t0 + 3s);
    CHECK_FALSE(end.for_good);
    CHECK_FALSE(end.was_failed_start);
    CHECK(h.rep.counters().fork_server_deaths == 1);
    // Ready for 3 s, longer than reset_after (1 s): healthy, so this is its first failure.
    CHECK(h.server.child().failures() == 1);

    h.server.restart_at(t0 + 3250ms, t0 + 3s);
    CHECK(take(h.out).empty());
    h.server.on_timer(false, {}, t0 + 3250ms);
    CHECK(take(h.out) == actions{start_server_action{}});
}

TEST_CASE("a fork server that breaks its protocol is killed once, and counted", "[fork_server]") {
    server_harness h;
    h.make_ready();
    CHECK(h.server.protocol_error("sent a malformed message", t0 + 2s));
    CHECK(take(h.out) == actions{stop_server_action{true}});
    CHECK(h.rep.counters().protocol_errors == 1);
    CHECK_FALSE(h.server.protocol_error("sent another", t0 + 2s));
    CHECK(take(h.out).empty());
    CHECK_THAT(h.server.describe_end({.signal = SIGKILL}, t0 + 2s),
               Catch::StartsWith("the fork server (pid 77) sent a malformed message; it was "
                                 "killed."));
}

TEST_CASE("a fork server asked to stop gets stop_grace, then SIGKILL, and is not restarted",
          "[fork_server]") {
    server_harness h;
    h.make_ready();
    h.server.stop(false, t0 + 2s);
    CHECK(take(h.out) == actions{stop_server_action{false}});
    h.server.on_timer(false, {}, t0 + 2499ms);
    CHECK(take(h.out).empty());
    h.server.on_timer(false, {}, t0 + 2500ms);
    CHECK(take(h.out) == actions{stop_server_action{true}});

    const auto end = h.server.gone("stopped", false, t0 + 2600ms);
    CHECK(end.for_good);
    CHECK(h.server.stopped());
    h.server.start(false, t0 + 3s);
    CHECK(take(h.out).empty());
}

TEST_CASE("direct mode has no fork server: nothing starts or stops", "[fork_server]") {
    pool_params params{.worker = {.executable = "/bin/true"}};
    action_queue out;
    report rep(false, out);
    fork_server_supervisor server(params, rep, out);
    CHECK_FALSE(server.enabled());
    server.start(false, t0);
    server.stop(true, t0);
    CHECK(out.empty());
    CHECK(server.child().timer() == time_point::max());
}
