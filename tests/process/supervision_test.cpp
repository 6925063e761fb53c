// The failure model, part 1, provoked for real: hangs (deadlines and heartbeats, with what
// the kernel says the worker was doing), memory limits, recycling, elastic size, restart
// intensity and degraded mode.
#include "../support/process_support.hpp"
#include <torchpool/error.hpp>
#include <torchpool/pool.hpp>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <signal.h>
#include <unistd.h>

using namespace torchpool;
using namespace torchpool::test;

namespace {

constexpr std::uint64_t mib = 1u << 20;

}  // namespace

TEST_CASE("a worker stuck in a system call past its deadline: the error says which, and where",
          "[process][hang]") {
    with_pool(params_for(1), [](pool& p) -> asio::awaitable<void> {
        auto [ec, r] =
            co_await p.async_submit(make_request("block_in_read", "", 300ms), tuple_awaitable);
        CHECK(ec == errc::timeout);
        REQUIRE(r.diagnostics.activity);
        const auto& a = *r.diagnostics.activity;
        CHECK(a.state == 'S');
        CHECK(a.syscall == "read");
        CHECK_THAT(a.wchan, Catch::Contains("pipe"));  // pipe_read (pipe_wait before 5.6)
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("sleeping in " + a.wchan) &&
                                              Catch::Contains("blocked in the system call read"));
        if (!a.kernel_stack.empty()) {  // root with CAP_SYS_ADMIN only
            CHECK_THAT(a.kernel_stack, Catch::Contains("pipe"));
        }
    });
}

TEST_CASE("an idle worker that stops answering heartbeats is replaced before it gets a task",
          "[process][hang]") {
    auto params = params_for(1);
    params.heartbeat_interval = 100ms;
    params.heartbeat_timeout = 300ms;
    params.stop_grace = 200ms;
    event_log events;
    params.on_worker_event = events.observer();
    with_pool(params, events, [&](pool& p) -> asio::awaitable<void> {
        auto [ec, r] = co_await p.async_submit(make_request("pid"), tuple_awaitable);
        REQUIRE(!ec);
        const int frozen = std::stoi(r.payload);

        // Frozen while idle, as a process stopped by a debugger or stuck in the kernel.
        ::kill(frozen, SIGSTOP);
        co_await events.changed->until(
            [&] { return !events.of(worker_event::kind::unresponsive).empty(); }, 10s);
        const auto unresponsive = events.of(worker_event::kind::unresponsive);
        CHECK(unresponsive[0].pid == frozen);
        CHECK_THAT(unresponsive[0].description,
                   Catch::Contains("did not answer a heartbeat within 300 ms") &&
                       Catch::Contains("stopped (by SIGSTOP or a debugger)"));

        // Its replacement answers; the frozen one never got a task.
        auto [ec2, r2] = co_await p.async_submit(make_request("pid"), tuple_awaitable);
        CHECK(!ec2);
        CHECK(std::stoi(r2.payload) != frozen);
        const auto s = p.stats();
        CHECK(s.unresponsive == 1);
        CHECK(s.worker_died == 0);
    });
}

TEST_CASE("a worker over its soft memory limit is recycled after its task, which succeeds",
          "[process][memory]") {
    auto params = params_for(1);
    params.memory = {.soft_limit_bytes = 32 * mib, .sample_interval = 50ms};
    event_log events;
    params.on_worker_event = events.observer();
    with_pool(params, events, [&](pool& p) -> asio::awaitable<void> {
        auto [ec, r] = co_await p.async_submit(make_request("allocate", "64"), tuple_awaitable);
        CHECK(!ec);  // its task is not failed
        // Its replacement starts, and it leaves once that one is ready. (A copy of the pid:
        // C++20 lets no lambda capture a structured binding, and Clang 14 enforces it.)
        const auto first_pid = r.worker_pid;
        co_await events.changed->until([&] {
            const auto exits = events.of(worker_event::kind::exited);
            return !exits.empty() && exits[0].pid == first_pid;
        });
        CHECK(p.stats().workers_idle == 1);
        auto [ec2, r2] = co_await p.async_submit(make_request("pid"), tuple_awaitable);
        CHECK(!ec2);
        CHECK(std::stoi(r2.payload) != r.worker_pid);  // replaced
        const auto recycled = events.of(worker_event::kind::recycled);
        REQUIRE(recycled.size() == 1);
        CHECK(recycled[0].pid == r.worker_pid);
        CHECK_THAT(recycled[0].description, Catch::Contains("over its soft limit of 32.0 MiB"));
        CHECK(p.stats().recycled == 1);
        CHECK(p.stats().paced_restarts == 0);
        CHECK(p.stats().killed_by_pool == 0);
    });
}

TEST_CASE(
    "a worker growing past its hard memory limit is killed and its task fails with the "
    "figures",
    "[process][memory]") {
    auto params = params_for(1);
    params.memory = {.hard_limit_bytes = 64 * mib, .sample_interval = 20ms, .use_cgroups = false};
    event_log events;
    params.on_worker_event = events.observer();
    with_pool(params, [&](pool& p) -> asio::awaitable<void> {
        auto [ec, r] = co_await p.async_submit(make_request("grow", "1000"), tuple_awaitable);
        CHECK(ec == errc::memory_limit);
        CHECK(ec == condition::worker_failure);
        REQUIRE(r.diagnostics.memory);
        CHECK(r.diagnostics.memory->private_bytes >= 64 * mib);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("over its hard limit of 64.0 MiB"));
        const auto notices = events.of(worker_event::kind::notice);
        REQUIRE_FALSE(notices.empty());
        CHECK_THAT(notices[0].description, Catch::Contains("enforced by sampling only"));
        CHECK(events.of(worker_event::kind::memory_limit).size() == 1);
        // The pool carries on with a new worker.
        auto [ec2, r2] = co_await p.async_submit(make_request("echo", "next"), tuple_awaitable);
        CHECK(!ec2);
        CHECK(p.stats().memory_kills == 1);
    });
}

TEST_CASE("in a memory cgroup, the kernel's OOM kill of a worker is reported for certain",
          "[process][memory]") {
    auto params = params_for(1);
    // Samples too rare to act first: the kernel enforces the limit.
    params.memory = {.hard_limit_bytes = 64 * mib, .sample_interval = 60s};
    // The cgroup's limit is the hard limit plus the worker's output memory (80 MiB here).
    params.shared_memory.worker_output_bytes = 16 * mib;
    event_log events;
    params.on_worker_event = events.observer();
    with_pool(params, [&](pool& p) -> asio::awaitable<void> {
        auto [ec0, r0] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        const auto notices = events.of(worker_event::kind::notice);
        REQUIRE_FALSE(notices.empty());
        if (notices[0].description.find("memory cgroup per worker") == std::string::npos) {
            WARN("no memory cgroup can be made on this host: " << notices[0].description);
            co_return;
        }
        auto [ec, r] = co_await p.async_submit(make_request("allocate", "256"), tuple_awaitable);
        CHECK(ec == errc::memory_limit);
        CHECK(r.diagnostics.signal == SIGKILL);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("the kernel's OOM killer killed it") &&
                                              Catch::Contains("64.0 MiB"));
        CHECK(events.of(worker_event::kind::memory_limit).size() == 1);
        auto [ec2, r2] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(!ec2);
    });
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
// (The sanitizers reserve terabytes of address space, so they cannot run under RLIMIT_AS.)
TEST_CASE("with limit_address_space, an allocation past the hard limit fails inside the worker",
          "[process][memory]") {
    auto params = params_for(1);
    params.memory = {
        .hard_limit_bytes = 512 * mib, .use_cgroups = false, .limit_address_space = true};
    with_pool(params, [&](pool& p) -> asio::awaitable<void> {
        auto [ec, r] = co_await p.async_submit(make_request("allocate", "1024"), tuple_awaitable);
        CHECK(ec == errc::task_failed);
        CHECK(r.diagnostics.error_type == "std::bad_alloc");
        // The same worker carries on.
        auto [ec2, r2] = co_await p.async_submit(make_request("pid"), tuple_awaitable);
        CHECK(!ec2);
        CHECK(std::stoi(r2.payload) == r.worker_pid);
    });
}
#endif

TEST_CASE("a pool that cannot start workers is degraded and says why: it recovers on its own",
          "[process][restart]") {
    const std::string blocker = std::filesystem::temp_directory_path() /
                                ("torchpool-blocker-" + std::to_string(::getpid()));
    { std::ofstream(blocker) << "workers cannot start while this file exists\n"; }
    auto params = params_for(2, {"--exit-at-start-while", blocker});
    params.spawn_failures_until_degraded = 3;
    event_log events;
    params.on_worker_event = events.observer();
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        event_log::listener listening(events, io.get_executor());
        pool p(io.get_executor(), params);
        CHECK_FALSE(p.health().live);
        p.async_run([](boost::system::error_code) {});
        co_await events.changed->until(
            [&] { return !events.of(worker_event::kind::degraded).empty(); });
        CHECK_THAT(events.of(worker_event::kind::degraded)[0].description,
                   Catch::Contains("cannot start while"));
        // Read from another thread, as a readiness probe would.
        pool_health h;
        std::thread([&] { h = p.health(); }).join();
        CHECK(h.live);
        CHECK(h.degraded);
        CHECK_FALSE(h.ready);
        CHECK_THAT(h.reason, Catch::Contains("degraded"));

        // Tasks fail at once with the last start error; nobody waits forever.
        auto [ec, r] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(ec == errc::spawn_failed);
        CHECK_THAT(r.diagnostics.summary,
                   Catch::Contains("exited with code 3") && Catch::Contains("cannot start while"));

        // The cause goes away: the pool recovers without being told, and says so.
        std::filesystem::remove(blocker);
        co_await events.changed->until(
            [&] { return !events.of(worker_event::kind::recovered).empty(); });
        auto [ec2, r2] = co_await p.async_submit(make_request("echo", "back"), tuple_awaitable);
        CHECK(!ec2);
        CHECK(r2.payload == "back");
        h = p.health();
        CHECK(h.ready);
        CHECK_FALSE(h.degraded);
        CHECK(h.reason.empty());
        co_await p.async_shutdown(tuple_awaitable);
        CHECK_FALSE(p.health().live);
    });
    std::filesystem::remove(blocker);
    CHECK(child_pids().empty());
}

TEST_CASE("restarts past the restart intensity are paced, and pacing ends when they slow down",
          "[process][restart]") {
    auto params = params_for(1);
    params.restart_limit = {.restarts = 2, .period = 400ms};  // then one per 200 ms
    event_log events;
    params.on_worker_event = events.observer();
    with_pool(params, events, [&](pool& p) -> asio::awaitable<void> {
        // Each worker answers a task (it is healthy, so it is replaced at once), then is
        // killed from outside; four kills in a row.
        for (int kill = 0; kill < 4; ++kill) {
            auto [ec, r] = co_await p.async_submit(make_request("pid"), tuple_awaitable);
            REQUIRE(!ec);
            const auto exits = events.of(worker_event::kind::exited).size();
            ::kill(std::stoi(r.payload), SIGKILL);
            co_await events.changed->until(
                [&] { return events.of(worker_event::kind::exited).size() > exits; });
        }
        auto [ec, r] = co_await p.async_submit(make_request("pid"), tuple_awaitable);
        CHECK(!ec);
        CHECK(p.stats().paced_restarts >= 1);
        auto notices = events.of(worker_event::kind::notice);
        REQUIRE_FALSE(notices.empty());
        CHECK_THAT(notices[0].description, Catch::Contains("restart intensity reached"));

        // A period later (the behaviour under test is the rate), a restart is not held back.
        asio::steady_timer later(co_await asio::this_coro::executor, 800ms);
        co_await later.async_wait(tuple_awaitable);
        const auto exits = events.of(worker_event::kind::exited).size();
        ::kill(std::stoi(r.payload), SIGKILL);
        co_await events.changed->until(
            [&] { return events.of(worker_event::kind::exited).size() > exits; });
        notices = events.of(worker_event::kind::notice);
        CHECK_THAT(notices.back().description, Catch::Contains("no longer paced"));
        auto [ec2, r2] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(!ec2);
    });
}

TEST_CASE(
    "recycling under load: each replacement is ready before the old worker leaves, and no "
    "task is lost",
    "[process][recycle]") {
    auto params = params_for(4);
    params.recycle = {.max_tasks = 50, .max_at_once = 2};
    params.queue_limit = 5000;
    event_log events;
    pool* the_pool = nullptr;
    std::size_t short_of_workers = 0;  // times a recycled worker left with fewer than 4 ready
    params.on_worker_event = [&](const worker_event& e) {
        if (e.what == worker_event::kind::exited && the_pool) {
            const auto s = the_pool->stats();
            // The one that left is gone already; the others and its replacement are ready.
            if (s.workers_idle + s.workers_busy < 4 && s.recycled > 0) {
                ++short_of_workers;
                UNSCOPED_INFO("at " << e.description << ": idle " << s.workers_idle << " busy "
                                    << s.workers_busy << " starting " << s.workers_starting
                                    << " waiting " << s.workers_waiting << " stopping "
                                    << s.workers_stopping);
            }
        }
        events.observer()(e);
    };
    with_pool(params, events, [&](pool& p) -> asio::awaitable<void> {
        the_pool = &p;
        constexpr int tasks = 2000;
        int ok = 0, failed = 0;
        for (int i = 0; i < tasks; ++i) {
            p.async_submit(make_request("echo", std::to_string(i)),
                           [&, i](boost::system::error_code ec, response r) {
                               (!ec && r.payload == std::to_string(i) ? ok : failed) += 1;
                               events.changed->notify();
                           });
        }
        co_await events.changed->until([&] { return ok + failed == tasks; }, 60s);
        CHECK(ok == tasks);
        CHECK(failed == 0);
        const auto s = p.stats();
        // Fewer than tasks / 50: a worker whose turn to be replaced has not come (two at a
        // time) keeps answering meanwhile.
        CHECK(s.recycled >= 10);
        CHECK(s.worker_died == 0);
        CHECK(s.killed_by_pool == 0);
        CHECK(s.paced_restarts == 0);
        CHECK(short_of_workers == 0);
        // Every task was timed: in the queue, and on its worker.
        CHECK(s.queue_wait.count == static_cast<std::uint64_t>(tasks));
        CHECK(s.run_time.count == static_cast<std::uint64_t>(tasks));
        CHECK(s.start_to_ready.count >= 4);
        CHECK(s.start_to_ready.count <= s.spawned);
        CHECK(s.run_time.quantile_us(0.5) <= s.run_time.quantile_us(0.99));
        const auto recycled = events.of(worker_event::kind::recycled);
        REQUIRE_FALSE(recycled.empty());
        CHECK_THAT(recycled[0].description,
                   Catch::Contains("answered 50 tasks (pool_params::recycle.max_tasks)"));
        the_pool = nullptr;  // exits at shutdown are not recycling
    });
}

TEST_CASE("recycling by age replaces each worker after its time, spread by jitter",
          "[process][recycle]") {
    auto params = params_for(2);
    params.recycle = {.max_age = 300ms, .jitter = 0.2};
    event_log events;
    params.on_worker_event = events.observer();
    with_pool(params, events, [&](pool& p) -> asio::awaitable<void> {
        co_await events.changed->until(
            [&] { return events.of(worker_event::kind::recycled).size() >= 4; }, 20s);
        for (const auto& e : events.of(worker_event::kind::recycled)) {
            CHECK_THAT(e.description, Catch::Contains("(pool_params::recycle.max_age)"));
        }
        auto [ec, r] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(!ec);
        CHECK(p.stats().workers_target == 2);
    });
}

TEST_CASE("elastic size: grows while tasks wait, shrinks after idling, follows resize",
          "[process][elastic]") {
    auto params = params_for(1);
    params.min_workers = 1;
    params.max_workers = 4;
    params.idle_timeout = 300ms;
    event_log events;
    params.on_worker_event = events.observer();
    with_pool(params, events, [&](pool& p) -> asio::awaitable<void> {
        // Four tasks of 200 ms at once: the pool grows to four workers to run them.
        int done = 0;
        std::set<int> pids;
        for (int i = 0; i < 4; ++i) {
            p.async_submit(make_request("sleep", "200"),
                           [&](boost::system::error_code ec, response r) {
                               CHECK(!ec);
                               pids.insert(r.worker_pid);
                               ++done;
                               events.changed->notify();
                           });
        }
        co_await events.changed->until([&] { return done == 4; }, 20s);
        // Usually four; fewer when a slow start (a loaded machine, a sanitizer) lets a
        // worker finish its task before the next is ready.
        CHECK(p.stats().spawned >= 2);
        CHECK(p.stats().spawned <= 4);

        // Idle for idle_timeout: back down to min_workers.
        co_await events.changed->until([&] { return p.stats().workers_target == 1; }, 20s);
        co_await events.changed->until(
            [&] { return events.of(worker_event::kind::exited).size() == p.stats().spawned - 1; },
            20s);
        CHECK(p.stats().worker_died == 0);

        // resize: up to three now, then down to two.
        p.resize(3);
        co_await events.changed->until([&] { return p.stats().workers_idle == 3; }, 20s);
        p.resize(2);
        co_await events.changed->until(
            [&] { return p.stats().workers_idle == 2 && p.stats().workers_stopping == 0; }, 20s);
        const auto notices = events.of(worker_event::kind::notice);
        REQUIRE_FALSE(notices.empty());
        CHECK_THAT(notices.back().description, Catch::Contains("resized to 2 workers"));
        auto [ec, r] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(!ec);
    });
}

TEST_CASE(
    "a busy worker SIGKILLed from outside: the error gives the machine's memory as "
    "evidence",
    "[process][memory]") {
    with_pool(params_for(1), [](pool& p) -> asio::awaitable<void> {
        auto [ec0, r0] = co_await p.async_submit(make_request("pid"), tuple_awaitable);
        REQUIRE(!ec0);
        const int pid = std::stoi(r0.payload);
        // The kill comes from outside once the task was sent (as the OOM killer's would):
        // posted now, it runs after the submission below has written the request.
        asio::post(co_await asio::this_coro::executor, [pid] { ::kill(pid, SIGKILL); });
        auto [ec, r] = co_await p.async_submit(make_request("hang"), tuple_awaitable);
        CHECK(ec == errc::worker_died);
        CHECK_THAT(r.diagnostics.summary,
                   Catch::Contains("SIGKILL") && Catch::Contains("When it died the machine had"));
    });
}
