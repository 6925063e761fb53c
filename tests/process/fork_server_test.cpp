// The fork-server start mode, with the fake worker as the program that is forked: workers
// are the pool's children, failures of the server and of its workers are contained.
#include "../support/process_support.hpp"
#include <torchpool/error.hpp>
#include <torchpool/pool.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <sched.h>
#include <signal.h>
#include <unistd.h>

using namespace torchpool;
using namespace torchpool::test;

namespace {

worker_params forked_fake_worker(std::vector<std::string> args = {}) {
    auto params = fake_worker(std::move(args));
    params.start = start_mode::fork_server;
    return params;
}

}  // namespace

TEST_CASE("workers made by the fork server are the pool's own children and serve tasks",
          "[process][fork_server]") {
    const std::size_t fds_before = open_fd_count();
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        // The tasks may all be served before the sixth worker is ready: the stats are read
        // once every worker is.
        std::size_t ready = 0;
        asio::steady_timer all_ready(io, asio::steady_timer::time_point::max());
        pool p(io.get_executor(), {.worker = forked_fake_worker(),
                                   .workers = 6,
                                   .on_worker_event = [&](const worker_event& e) {
                                       if (e.what == worker_event::kind::ready && ++ready == 6) {
                                           all_ready.cancel();
                                       }
                                   }});
        p.async_run(asio::detached);
        std::set<int> pids;
        std::set<std::string> infos;
        for (int i = 0; i < 24; ++i) {
            auto [ec, r] = co_await p.async_submit(make_request("parent"), tuple_awaitable);
            REQUIRE(!ec);
            // CLONE_PARENT: the worker's parent is this process, not the fork server.
            CHECK(r.payload == std::to_string(::getpid()));
            pids.insert(r.worker_pid);
            auto [ec2, info] = co_await p.async_submit(make_request("start_info"), tuple_awaitable);
            REQUIRE(!ec2);
            infos.insert(info.payload);
        }
        if (ready < 6) {
            co_await all_ready.async_wait(asio::as_tuple(asio::use_awaitable));
        }
        const auto s = p.stats();
        CHECK(s.fork_server_ready);
        CHECK(s.fork_server_pid > 0);
        CHECK(s.fork_server_starts == 1);
        CHECK(pids.count(s.fork_server_pid) == 0);
        CHECK(s.spawned == 6);
        // Every worker ran its start hook after the fork, knowing its slot; two cores and
        // six workers make one thread each.
        for (const auto& info : infos) {
            CHECK_THAT(info, Catch::Contains("intra=1 inter=1 forked=1"));
        }
        CHECK(s.intra_op_threads == 1);
        co_await p.async_shutdown(asio::use_awaitable);
    });
    CHECK(child_pids().empty());
    CHECK(open_fd_count() == fds_before);
}

TEST_CASE("a forked worker that crashes fails only its task and is replaced by a new fork",
          "[process][fork_server]") {
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        // One worker, so that the tasks after the crash wait for its replacement.
        pool p(io.get_executor(), {.worker = forked_fake_worker(), .workers = 1});
        p.async_run(asio::detached);
        auto [ec, r] = co_await p.async_submit(make_request("crash", std::to_string(SIGSEGV)),
                                               tuple_awaitable);
        CHECK(ec == errc::worker_died);
        CHECK(r.diagnostics.signal == SIGSEGV);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("SIGSEGV"));
        for (int i = 0; i < 10; ++i) {
            auto [ec2, r2] = co_await p.async_submit(make_request("echo", "x"), tuple_awaitable);
            CHECK(!ec2);
        }
        const auto s = p.stats();
        CHECK(s.spawned == 2);
        CHECK(s.fork_server_starts == 1);
        co_await p.async_shutdown(asio::use_awaitable);
    });
    CHECK(child_pids().empty());
}

TEST_CASE("when the fork server dies, running workers carry on and it is restarted",
          "[process][fork_server]") {
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        notifier changed(io.get_executor());
        int server_exits = 0;
        int server_ready = 0;
        int workers_ready = 0;
        pool p(io.get_executor(),
               {.worker = forked_fake_worker(),
                .workers = 2,
                .on_worker_event = [&](const worker_event& e) {
                    server_exits += e.what == worker_event::kind::fork_server_exited;
                    server_ready += e.what == worker_event::kind::fork_server_ready;
                    workers_ready += e.what == worker_event::kind::ready;
                    changed.notify();
                }});
        p.async_run(asio::detached);
        auto [ec0, first] = co_await p.async_submit(make_request("pid"), tuple_awaitable);
        REQUIRE(!ec0);
        // Both workers running (one answering is not both made, on a busy machine).
        co_await changed.until([&] { return workers_ready == 2; });
        const int server = p.stats().fork_server_pid;
        REQUIRE(server > 0);
        REQUIRE(::kill(server, SIGKILL) == 0);
        co_await changed.until([&] { return server_exits == 1 && server_ready == 2; });
        // The worker that was running before is the same process, still serving.
        for (int i = 0; i < 6; ++i) {
            auto [ec, r] = co_await p.async_submit(make_request("pid"), tuple_awaitable);
            CHECK(!ec);
        }
        auto s = p.stats();
        CHECK(s.fork_server_starts == 2);
        CHECK(s.fork_server_deaths == 1);
        CHECK(s.fork_server_pid != server);
        CHECK(s.spawned == 2);  // no worker was lost
        // A worker that dies now is replaced by the new fork server.
        auto [ec1, crashed] = co_await p.async_submit(
            make_request("crash", std::to_string(SIGKILL)), tuple_awaitable);
        CHECK(ec1 == errc::worker_died);
        co_await changed.until([&] { return workers_ready == 3; });
        CHECK(p.stats().spawned == 3);
        for (int i = 0; i < 6; ++i) {
            auto [ec2, r2] =
                co_await p.async_submit(make_request("echo", "after"), tuple_awaitable);
            CHECK(!ec2);
        }
        co_await p.async_shutdown(asio::use_awaitable);
    });
    CHECK(child_pids().empty());
}

TEST_CASE("a fork server that cannot start makes the pool degraded, with its own words",
          "[process][fork_server]") {
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), {.worker = forked_fake_worker({"--exit-at-start", "3"}),
                                   .workers = 2,
                                   .restart_backoff = {.initial = 1ms, .max = 5ms}});
        p.async_run(asio::detached);
        auto [ec, r] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(ec == errc::spawn_failed);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("fork server") &&
                                              Catch::Contains("exited with code 3") &&
                                              Catch::Contains("failing at start as asked"));
        CHECK(p.stats().degraded);
        p.cancel();
    });
    CHECK(child_pids().empty());
}

TEST_CASE("a start hook that throws in each forked worker is reported as the start failure",
          "[process][fork_server]") {
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), {.worker = forked_fake_worker({"--fail-start-hook"}),
                                   .workers = 1,
                                   .restart_backoff = {.initial = 1ms, .max = 5ms}});
        p.async_run(asio::detached);
        auto [ec, r] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(ec == errc::spawn_failed);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("exited with code 3") &&
                                              Catch::Contains("start hook failing as asked"));
        CHECK(p.stats().fork_server_ready);  // the server is fine; its workers are not
        p.cancel();
    });
    CHECK(child_pids().empty());
}

TEST_CASE("starts are staged: no more workers start at once than max_concurrent_starts",
          "[process][fork_server]") {
    for (auto mode : {start_mode::direct, start_mode::fork_server}) {
        run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
            notifier changed(io.get_executor());
            std::size_t in_flight = 0, most = 0, ready = 0;
            auto params = fake_worker();
            params.start = mode;
            pool p(io.get_executor(), {.worker = params,
                                       .workers = 24,
                                       .max_concurrent_starts = 3,
                                       .on_worker_event = [&](const worker_event& e) {
                                           if (e.what == worker_event::kind::started) {
                                               most = std::max(most, ++in_flight);
                                           } else if (e.what == worker_event::kind::ready) {
                                               --in_flight;
                                               ++ready;
                                           }
                                           changed.notify();
                                       }});
            p.async_run(asio::detached);
            co_await changed.until([&] { return ready == 24; });
            CHECK(most <= 3);
            CHECK(most >= 1);
            co_await p.async_shutdown(asio::use_awaitable);
        });
    }
    CHECK(child_pids().empty());
}

TEST_CASE("thread counts per worker follow the cores and can be set per pool",
          "[process][fork_server]") {
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        pool p(
            io.get_executor(),
            {.worker = fake_worker(), .workers = 1, .intra_op_threads = 3, .inter_op_threads = 2});
        p.async_run(asio::detached);
        auto [ec, r] = co_await p.async_submit(make_request("start_info"), tuple_awaitable);
        REQUIRE(!ec);
        CHECK(r.payload == "slot=0 intra=3 inter=2 forked=0");
        CHECK(p.stats().intra_op_threads == 3);
        CHECK(p.stats().inter_op_threads == 2);
        co_await p.async_shutdown(asio::use_awaitable);
    });
}

TEST_CASE("killing the fork server while it makes many workers loses none of them",
          "[process][fork_server]") {
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        notifier changed(io.get_executor());
        int started = 0, ready = 0, server_ready = 0;
        pool p(io.get_executor(), {.worker = forked_fake_worker(),
                                   .workers = 32,
                                   .max_concurrent_starts = 32,
                                   .restart_backoff = {.initial = 1ms, .max = 5ms},
                                   .on_worker_event = [&](const worker_event& e) {
                                       using kind = worker_event::kind;
                                       server_ready += e.what == kind::fork_server_ready;
                                       ready += e.what == kind::ready;
                                       // In the middle of the burst: more requests are queued at
                                       // the server, and it may be between a clone and the new
                                       // worker's hand-over.
                                       if (e.what == kind::started && ++started == 5) {
                                           ::kill(p.stats().fork_server_pid, SIGKILL);
                                       }
                                       changed.notify();
                                   }});
        p.async_run(asio::detached);
        co_await changed.until([&] { return ready == 32 && server_ready == 2; });
        const auto s = p.stats();
        CHECK(s.fork_server_deaths == 1);
        CHECK(s.workers_idle == 32);
        co_await p.async_shutdown(asio::use_awaitable);
    });
    // Every worker the first server made was handed over, and reaped by the pool.
    for (int pid : child_pids()) {
        std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
        std::string line;
        std::getline(stat, line);
        UNSCOPED_INFO("left behind: " << line);
    }
    CHECK(child_pids().empty());
}

TEST_CASE("a fork server helper that dies alone gets the server replaced: workers carry on",
          "[process][fork_server]") {
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        notifier changed(io.get_executor());
        std::set<int> worker_pids;
        int server_ready = 0, workers_ready = 0;
        auto params = forked_fake_worker();
        params.env.push_back("TORCHPOOL_FORK_SERVER_HELPERS=1");  // whatever the cores
        pool p(io.get_executor(),
               {.worker = params, .workers = 2, .on_worker_event = [&](const worker_event& e) {
                    using kind = worker_event::kind;
                    server_ready += e.what == kind::fork_server_ready;
                    if (e.what == kind::started) {
                        worker_pids.insert(e.pid);
                    }
                    workers_ready += e.what == kind::ready;
                    changed.notify();
                }});
        p.async_run(asio::detached);
        co_await changed.until([&] { return workers_ready == 2; });
        // The helper is the one child of ours that is neither the server nor a worker.
        const int server = p.stats().fork_server_pid;
        int helper = 0;
        for (int pid : child_pids()) {
            if (pid != server && worker_pids.count(pid) == 0) {
                helper = pid;
            }
        }
        REQUIRE(helper > 0);
        REQUIRE(::kill(helper, SIGKILL) == 0);
        co_await changed.until([&] { return server_ready == 2; });
        CHECK(p.stats().fork_server_pid != server);
        CHECK(p.stats().fork_server_starts == 2);
        // The workers were not touched, and a new one comes from the new server.
        auto [ec, r] = co_await p.async_submit(make_request("crash", std::to_string(SIGKILL)),
                                               tuple_awaitable);
        CHECK(ec == errc::worker_died);
        co_await changed.until([&] { return workers_ready == 3; });
        CHECK(p.stats().spawned == 3);
        co_await p.async_shutdown(asio::use_awaitable);
    });
    CHECK(child_pids().empty());
}

// A file whose existence asks the first child the fork server makes to be SIGKILLed before it
// can hand itself over (TORCHPOOL_TEST_DIE_BEFORE_HAND_OVER), as an OOM killer or an
// operator could in that window.
struct die_before_hand_over {
    die_before_hand_over()
        : path(std::filesystem::temp_directory_path() /
               ("torchpool-die-" + std::to_string(::getpid()))) {
        std::ofstream(path.string()) << "the first child dies\n";
    }
    ~die_before_hand_over() { std::filesystem::remove(path); }
    bool taken() const { return !std::filesystem::exists(path); }
    std::string env() const { return "TORCHPOOL_TEST_DIE_BEFORE_HAND_OVER=" + path.string(); }
    std::filesystem::path path;
};

TEST_CASE("a forked worker killed before it hands itself over is reaped, and its slot restarts",
          "[process][fork_server]") {
    die_before_hand_over first;
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        notifier changed(io.get_executor());
        std::vector<std::string> start_failures;
        std::string all_events;
        int workers_ready = 0;
        auto params = forked_fake_worker();
        params.env.push_back("TORCHPOOL_FORK_SERVER_HELPERS=0");  // the first child: a worker
        params.env.push_back(first.env());
        pool p(io.get_executor(),
               {.worker = params, .workers = 1, .on_worker_event = [&](const worker_event& e) {
                    all_events += e.description + "\n";
                    if (e.what == worker_event::kind::start_failed) {
                        start_failures.push_back(e.description);
                    }
                    workers_ready += e.what == worker_event::kind::ready;
                    changed.notify();
                }});
        p.async_run(asio::detached);
        auto [ec, r] = co_await p.async_submit(make_request("echo", "still"), tuple_awaitable);
        CHECK(!ec);
        CHECK(r.payload == "still");
        CHECK(first.taken());
        // The server handed the dead worker's pidfd over in its place: a failed start in
        // words, not a wait for the spawn timeout, and no zombie.
        INFO(all_events);
        REQUIRE(start_failures.size() == 1);
        CHECK_THAT(start_failures[0], Catch::Contains("died before it could hand itself over"));
        CHECK(p.stats().failed_starts == 1);
        CHECK(zombie_children().empty());
        co_await p.async_shutdown(asio::use_awaitable);
    });
    CHECK(child_pids().empty());
}

TEST_CASE("a fork server helper killed before it hands itself over gets the server replaced",
          "[process][fork_server]") {
    die_before_hand_over first;
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        notifier changed(io.get_executor());
        int server_ready = 0, workers_ready = 0;
        auto params = forked_fake_worker();
        params.env.push_back("TORCHPOOL_FORK_SERVER_HELPERS=1");
        params.env.push_back(first.env());
        pool p(io.get_executor(),
               {.worker = params, .workers = 2, .on_worker_event = [&](const worker_event& e) {
                    server_ready += e.what == worker_event::kind::fork_server_ready;
                    workers_ready += e.what == worker_event::kind::ready;
                    changed.notify();
                }});
        p.async_run(asio::detached);
        // The pool learns of the helper (from the server) and that it is gone: the server is
        // replaced, as for a helper that dies later.
        co_await changed.until([&] { return server_ready == 2 && workers_ready >= 2; });
        CHECK(first.taken());
        CHECK(p.stats().fork_server_starts == 2);
        auto [ec, r] = co_await p.async_submit(make_request("echo", "served"), tuple_awaitable);
        CHECK(!ec);
        CHECK(zombie_children().empty());
        co_await p.async_shutdown(asio::use_awaitable);
    });
    CHECK(child_pids().empty());
}

namespace {

std::string cpus_of(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("Cpus_allowed_list:")) {
            return line.substr(line.find_first_not_of(" \t", 18));
        }
    }
    return "?";
}

}  // namespace

TEST_CASE(
    "a forked worker is a process as fork() makes it: atfork handlers ran, and its "
    "thread is its own (pinning it leaves the server alone)",
    "[process][fork_server]") {
    cpu_set_t allowed;
    REQUIRE(::sched_getaffinity(0, sizeof allowed, &allowed) == 0);
    int last_cpu = -1;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (CPU_ISSET(cpu, &allowed)) {
            last_cpu = cpu;
        }
    }
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), {.worker = forked_fake_worker(), .workers = 2});
        p.async_run(asio::detached);
        auto [ec, r] = co_await p.async_submit(make_request("atfork"), tuple_awaitable);
        REQUIRE(!ec);
        // prepare ran in the server before each fork (the worker holds a copy of the count
        // as it was then), child ran in the worker.
        if (r.payload != "not under ThreadSanitizer") {
            CHECK_THAT(r.payload, Catch::Contains("child=1"));
            CHECK_THAT(r.payload, !Catch::Contains("prepare=0"));
        }

        const int server = p.stats().fork_server_pid;
        REQUIRE(server > 0);
        const std::string server_cpus = cpus_of(server);
        auto [ec2, pinned] =
            co_await p.async_submit(make_request("pin", std::to_string(last_cpu)), tuple_awaitable);
        REQUIRE(!ec2);
        CHECK(pinned.payload == std::to_string(last_cpu));
        CHECK(cpus_of(server) == server_cpus);
        co_await p.async_shutdown(tuple_awaitable);
    });
}

TEST_CASE("a directly started worker runs no atfork handler", "[process]") {
    run_coroutine([](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), {.worker = fake_worker(), .workers = 1});
        p.async_run(asio::detached);
        auto [ec, r] = co_await p.async_submit(make_request("atfork"), tuple_awaitable);
        CHECK(!ec);
        CHECK((r.payload == "prepare=0 child=0" || r.payload == "not under ThreadSanitizer"));
        co_await p.async_shutdown(tuple_awaitable);
    });
}
