// The failure model, provoked for real: a pool of fake workers (fake_worker.cpp) that
// crash, hang, exit, throw, write garbage and start slowly on request.
#include "../support/process_support.hpp"
#include <torchpool/error.hpp>
#include <torchpool/pool.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/detached.hpp>

#include <catch2/catch.hpp>

#include <sstream>

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace torchpool;
using namespace torchpool::test;

TEST_CASE("a task runs on a worker and returns its payload and tensors", "[process]") {
    with_pool(params_for(2), [](pool& p) -> asio::awaitable<void> {
        request req = make_request("echo", "hello");
        req.tensors.push_back(tensor(dtype::float32, {2}, std::string(8, 'a')));
        auto [ec, r] = co_await p.async_submit(req, tuple_awaitable);
        INFO(ec.message() << ": " << r.diagnostics.summary);
        REQUIRE(!ec);
        CHECK(r.payload == "hello");
        REQUIRE(r.tensors.size() == 1);
        CHECK(r.tensors[0].data == std::string(8, 'a'));
        CHECK(r.worker_pid > 0);
        CHECK(p.stats().succeeded == 1);
    });
}

TEST_CASE("a handler that throws fails its task only, and the same worker serves the next",
          "[process]") {
    with_pool(params_for(1), [](pool& p) -> asio::awaitable<void> {
        auto [ec1, before] = co_await p.async_submit(make_request("pid"), tuple_awaitable);
        REQUIRE(!ec1);
        auto [ec, r] = co_await p.async_submit(make_request("throw", "bad input"), tuple_awaitable);
        CHECK(ec == errc::task_failed);
        CHECK(r.diagnostics.error_type == "std::runtime_error");
        CHECK(r.diagnostics.error_message == "bad input");
        auto [ec2, after] = co_await p.async_submit(make_request("pid"), tuple_awaitable);
        REQUIRE(!ec2);
        CHECK(after.payload == before.payload);
        // A method the worker does not serve is the same kind of failure.
        auto [ec3, r3] = co_await p.async_submit(make_request("nope"), tuple_awaitable);
        CHECK(ec3 == errc::task_failed);
        CHECK(r3.diagnostics.error_type == "torchpool::unknown_method");
        CHECK_THAT(r3.diagnostics.error_message, Catch::Contains("echo"));
    });
}

TEST_CASE("a worker killed by a signal fails its task with the signal, and is replaced",
          "[process]") {
    with_pool(params_for(1), [](pool& p) -> asio::awaitable<void> {
        auto [ec, r] = co_await p.async_submit(make_request("crash", std::to_string(SIGSEGV)),
                                               tuple_awaitable);
        CHECK(ec == errc::worker_died);
        CHECK(r.diagnostics.signal == SIGSEGV);
        CHECK(r.diagnostics.worker_pid > 0);
        CHECK(!r.diagnostics.memory);  // died on its own: not read (see task_diagnostics)
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("SIGSEGV") && Catch::Contains("crash"));
        auto [ec2, r2] =
            co_await p.async_submit(make_request("echo", "still here"), tuple_awaitable);
        CHECK(!ec2);
        CHECK(r2.payload == "still here");
        CHECK(r2.worker_pid != r.diagnostics.worker_pid);
        CHECK(p.stats().restarts == 1);
        CHECK(p.stats().deaths_by_signal == 1);
    });
}

TEST_CASE("a worker that exits with a code fails its task with that code", "[process]") {
    with_pool(params_for(1), [](pool& p) -> asio::awaitable<void> {
        auto [ec, r] = co_await p.async_submit(make_request("exit", "7"), tuple_awaitable);
        CHECK(ec == errc::worker_died);
        CHECK(r.diagnostics.exit_code == 7);
        CHECK(!r.diagnostics.signal);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("exited with code 7"));
    });
}

TEST_CASE("the last lines a worker wrote come with its death", "[process]") {
    with_pool(params_for(1), [](pool& p) -> asio::awaitable<void> {
        auto [ec0, printed] =
            co_await p.async_submit(make_request("print", "stdout line"), tuple_awaitable);
        CHECK(!ec0);
        auto [ec, r] = co_await p.async_submit(
            make_request("log_then_crash", "CUDA out of memory, or so it says"), tuple_awaitable);
        CHECK(ec == errc::worker_died);
        CHECK(r.diagnostics.signal == SIGABRT);
        CHECK_THAT(r.diagnostics.log_tail,
                   Catch::Contains("stdout line") && Catch::Contains("CUDA out of memory"));
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("CUDA out of memory"));
    });
}

TEST_CASE("a task past its deadline times out and its hung worker is replaced", "[process]") {
    with_pool(params_for(1), [](pool& p) -> asio::awaitable<void> {
        auto [ec, r] = co_await p.async_submit(make_request("hang", "", 300ms), tuple_awaitable);
        CHECK(ec == errc::timeout);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("passed its deadline"));
        CHECK(r.diagnostics.task_run_time > 0ms);
        auto [ec2, r2] = co_await p.async_submit(make_request("echo", "next"), tuple_awaitable);
        CHECK(!ec2);
        CHECK(r2.worker_pid != r.worker_pid);
        CHECK(p.stats().timed_out == 1);
        CHECK(p.stats().killed_by_pool == 1);
    });
}

TEST_CASE("a worker that ignores SIGTERM past its deadline gets SIGKILL", "[process]") {
    auto params = params_for(1);
    params.stop_grace = 200ms;
    std::vector<std::string> exits;
    params.on_worker_event = [&](const worker_event& e) {
        if (e.what == worker_event::kind::exited) {
            exits.push_back(e.description);
        }
    };
    with_pool(params, [&](pool& p) -> asio::awaitable<void> {
        auto [ec, r] = co_await p.async_submit(make_request("ignore_term_and_hang", "", 200ms),
                                               tuple_awaitable);
        CHECK(ec == errc::timeout);
        auto [ec2, r2] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(!ec2);
    });
    REQUIRE(exits.size() >= 1);
    CHECK_THAT(exits[0], Catch::Contains("SIGKILL"));
}

TEST_CASE("a queued task past its deadline times out while the worker keeps running", "[process]") {
    with_pool(params_for(1), [](pool& p) -> asio::awaitable<void> {
        int done = 0;
        boost::system::error_code slow_error;
        p.async_submit(make_request("sleep", "400"), [&](auto ec, response) {
            slow_error = ec;
            ++done;
        });
        auto [ec, r] = co_await p.async_submit(make_request("echo", "", 100ms), tuple_awaitable);
        CHECK(ec == errc::timeout);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("queue"));
        CHECK(done == 0);
        auto [ec2, r2] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(!ec2);
        CHECK(done == 1);
        CHECK(!slow_error);
        CHECK(p.stats().killed_by_pool == 0);
    });
}

TEST_CASE("a worker that sends a corrupt message is killed with a protocol error", "[process]") {
    with_pool(params_for(1), [](pool& p) -> asio::awaitable<void> {
        auto [ec, r] = co_await p.async_submit(make_request("garbage"), tuple_awaitable);
        CHECK(ec == errc::protocol_error);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("malformed message"));
        auto [ec2, r2] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(!ec2);
        CHECK(p.stats().protocol_errors == 1);
    });
}

TEST_CASE("a worker that sends a file descriptor is killed with a protocol error", "[process]") {
    with_pool(params_for(1), [](pool& p) -> asio::awaitable<void> {
        auto [ec, r] = co_await p.async_submit(make_request("send_descriptor"), tuple_awaitable);
        CHECK(ec == errc::protocol_error);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("sent file descriptors"));
        auto [ec2, r2] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(!ec2);
        CHECK(p.stats().protocol_errors == 1);
    });
}

TEST_CASE("a worker that announces an oversize message is killed with a protocol error",
          "[process]") {
    auto params = params_for(1);
    params.max_frame_bytes = 1 << 20;
    with_pool(params, [](pool& p) -> asio::awaitable<void> {
        auto [ec, r] = co_await p.async_submit(make_request("oversize"), tuple_awaitable);
        CHECK(ec == errc::protocol_error);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("over the limit of 1048576 bytes"));
        auto [ec2, r2] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(!ec2);
    });
}

TEST_CASE("a worker that closes its channel but keeps running is killed after the grace",
          "[process]") {
    auto params = params_for(1);
    params.stop_grace = 200ms;
    with_pool(params, [](pool& p) -> asio::awaitable<void> {
        auto [ec, r] = co_await p.async_submit(make_request("close_channel"), tuple_awaitable);
        CHECK(ec == errc::protocol_error);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("closed its channel but did not exit"));
        auto [ec2, r2] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(!ec2);
    });
}

TEST_CASE("a full queue refuses a task at once, and the queued ones still run", "[process]") {
    auto params = params_for(1);
    params.queue_limit = 2;
    with_pool(params, [](pool& p) -> asio::awaitable<void> {
        notifier changed(co_await asio::this_coro::executor);
        std::vector<std::string> order;
        auto record = [&](std::string name) {
            return [&, name](boost::system::error_code ec, response) {
                order.push_back(name + (ec ? ": " + ec.message() : ""));
                changed.notify();
            };
        };
        // The worker is ready once this returns; then "sleep" runs and two wait.
        auto [ec0, r0] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        REQUIRE(!ec0);
        p.async_submit(make_request("sleep", "300"), record("sleep"));
        p.async_submit(make_request("echo"), record("a"));
        p.async_submit(make_request("echo"), record("b"));
        auto [ec, r] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(ec == errc::overloaded);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("queue_limit"));
        CHECK(order.empty());  // refused at once, before anything else finished
        co_await changed.until([&] { return order.size() == 3; });
        CHECK(order == std::vector<std::string>{"sleep", "a", "b"});
        CHECK(p.stats().overloaded == 1);
    });
}

TEST_CASE("an idle worker that dies is replaced without disturbing anyone", "[process]") {
    auto params = params_for(2);
    std::size_t ready = 0, exited = 0;
    std::optional<notifier> changed;
    params.on_worker_event = [&](const worker_event& e) {
        ready += e.what == worker_event::kind::ready;
        exited += e.what == worker_event::kind::exited;
        if (changed) {
            changed->notify();
        }
    };
    with_pool(params, [&](pool& p) -> asio::awaitable<void> {
        changed.emplace(co_await asio::this_coro::executor);
        co_await changed->until([&] { return ready == 2; });
        auto [ec, r] = co_await p.async_submit(make_request("pid"), tuple_awaitable);
        REQUIRE(!ec);
        // Killed from outside while idle.
        REQUIRE(::kill(std::stoi(r.payload), SIGKILL) == 0);
        co_await changed->until([&] { return exited == 1 && ready == 3; });
        CHECK(p.stats().worker_died == 0);
        CHECK(p.stats().deaths_by_signal == 1);
        for (int i = 0; i < 4; ++i) {
            auto [ec2, r2] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
            CHECK(!ec2);
        }
        changed.reset();  // its timer must not outlive the io_context
    });
}

TEST_CASE("a worker that fails to start makes queued tasks fail fast with its reason",
          "[process]") {
    auto params = params_for(1, {"--exit-at-start", "3"});
    params.spawn_failures_until_degraded = 2;
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), params);
        p.async_run(asio::detached);
        auto [ec, r] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(ec == errc::spawn_failed);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("exited with code 3") &&
                                              Catch::Contains("failing at start as asked"));
        CHECK(p.stats().degraded);
        CHECK(p.stats().failed_starts >= 2);
        // While degraded, a new task fails at once.
        auto [ec2, r2] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(ec2 == errc::spawn_failed);
        co_await p.async_shutdown(tuple_awaitable);
        CHECK(child_pids().empty());
    });
}

TEST_CASE("a worker executable that does not exist is a spawn failure that says so", "[process]") {
    pool_params params{.worker = {.executable = "/nonexistent/worker"},
                       .spawn_failures_until_degraded = 1};
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), params);
        p.async_run(asio::detached);
        auto [ec, r] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(ec == errc::spawn_failed);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("/nonexistent/worker") &&
                                              Catch::Contains("No such file or directory"));
        co_await p.async_shutdown(tuple_awaitable);
    });
}

TEST_CASE("a worker that never becomes ready is killed at the spawn timeout", "[process]") {
    auto params = params_for(1, {"--never-ready"});
    params.load_timeout = 300ms;
    params.spawn_failures_until_degraded = 1;
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), params);
        p.async_run(asio::detached);
        auto [ec, r] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(ec == errc::spawn_failed);
        // (Given 300 ms more for each look at which it had used CPU since the one before.)
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("did not become ready within") &&
                                              Catch::Contains("(pool_params::load_timeout"));
        co_await p.async_shutdown(tuple_awaitable);
        CHECK(child_pids().empty());
    });
}

TEST_CASE("a worker that computes past its load_timeout is given more time, not killed",
          "[process]") {
    // As on a machine whose cores are busy with other work: the start takes longer than the
    // load_timeout, but the worker uses CPU the whole time.
    auto params = params_for(1, {"--busy-start", "400"});
    params.load_timeout = 150ms;
    params.load_extensions = 40;  // a slow machine still gives it 6 s
    with_pool(params, [](pool& p) -> asio::awaitable<void> {
        auto [ec, r] = co_await p.async_submit(make_request("echo", "worth it"), tuple_awaitable);
        CHECK(!ec);
        CHECK(r.payload == "worth it");
        CHECK(p.stats().failed_starts == 0);
        CHECK(p.stats().load_extensions >= 2);  // 400 ms of CPU cannot fit in two looks
    });
}

TEST_CASE("a task submitted while workers start slowly waits for them", "[process]") {
    with_pool(params_for(1, {"--slow-start", "300"}), [](pool& p) -> asio::awaitable<void> {
        auto [ec, r] = co_await p.async_submit(make_request("echo", "patience"), tuple_awaitable);
        CHECK(!ec);
        CHECK(r.payload == "patience");
        CHECK(p.stats().failed_starts == 0);
    });
}

TEST_CASE(
    "cancelling a queued task removes it, and terminal cancellation of a running one "
    "completes it at once",
    "[process]") {
    with_pool(params_for(1), [](pool& p) -> asio::awaitable<void> {
        auto [ec0, warm] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        REQUIRE(!ec0);
        notifier changed(co_await asio::this_coro::executor);
        boost::system::error_code running_error, queued_error;
        int done = 0;
        asio::cancellation_signal cancel_running, cancel_queued;
        p.async_submit(make_request("hang"),
                       asio::bind_cancellation_slot(cancel_running.slot(),
                                                    [&](boost::system::error_code ec, response) {
                                                        running_error = ec;
                                                        ++done;
                                                        changed.notify();
                                                    }));
        p.async_submit(make_request("echo"),
                       asio::bind_cancellation_slot(cancel_queued.slot(),
                                                    [&](boost::system::error_code ec, response) {
                                                        queued_error = ec;
                                                        ++done;
                                                        changed.notify();
                                                    }));
        // Cancellation right after submission counts: the pool sees both in order.
        cancel_queued.emit(asio::cancellation_type::partial);
        co_await changed.until([&] { return done == 1; });
        CHECK(queued_error == asio::error::operation_aborted);

        // Partial cancellation of a task that never looks: the caller waits for its answer.
        // Terminal: it completes at once. Whether the worker had started "hang" (it is then
        // killed after pool_params::cancel_grace) or saw the cancel first (it answers and
        // stays) depends on timing; task_policies_test provokes each case.
        cancel_running.emit(asio::cancellation_type::partial);
        cancel_running.emit(asio::cancellation_type::terminal);
        co_await changed.until([&] { return done == 2; });
        CHECK(running_error == asio::error::operation_aborted);
        CHECK(p.stats().cancelled == 2);

        auto [ec2, r2] = co_await p.async_submit(make_request("echo", "after"), tuple_awaitable);
        CHECK(!ec2);
        CHECK(r2.payload == "after");
    });
}

TEST_CASE("cancel() aborts every task and async_run completes once all are reaped", "[process]") {
    run_coroutine([](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), params_for(2));
        notifier changed(io.get_executor());
        bool run_done = false;
        p.async_run([&](boost::system::error_code ec) {
            CHECK(!ec);
            run_done = true;
            changed.notify();
        });
        auto [ec0, warm] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        REQUIRE(!ec0);  // a worker is up, so some of the tasks below run before cancel()
        std::vector<boost::system::error_code> errors;
        for (int i = 0; i < 5; ++i) {
            p.async_submit(make_request("hang"), [&](boost::system::error_code ec, response) {
                errors.push_back(ec);
                changed.notify();
            });
        }
        p.cancel();
        p.cancel();  // idempotent
        co_await changed.until([&] { return run_done && errors.size() == 5; });
        for (auto e : errors) {
            CHECK(e == asio::error::operation_aborted);
        }
        CHECK(child_pids().empty());
        auto [ec2, r2] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(ec2 == errc::shutting_down);
    });
}

TEST_CASE("graceful shutdown finishes queued tasks and refuses new ones", "[process]") {
    std::vector<std::string> exits;
    auto params = params_for(2);
    params.on_worker_event = [&](const worker_event& e) {
        if (e.what == worker_event::kind::exited) {
            exits.push_back(e.description);
        }
    };
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), params);
        p.async_run(asio::detached);
        std::vector<boost::system::error_code> errors;
        for (int i = 0; i < 3; ++i) {
            p.async_submit(make_request("sleep", "20"),
                           [&](boost::system::error_code ec, response) { errors.push_back(ec); });
        }
        notifier changed(io.get_executor());
        bool stopped = false;
        p.async_shutdown([&](boost::system::error_code ec) {
            CHECK(!ec);
            stopped = true;
            changed.notify();
        });
        auto [late, r] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(late == errc::shutting_down);
        co_await changed.until([&] { return stopped; });
        REQUIRE(errors.size() == 3);
        for (auto e : errors) {
            CHECK(!e);
        }
        CHECK(child_pids().empty());
    });
    // Each worker left on its own when asked, rather than being killed after the grace.
    REQUIRE(exits.size() == 2);
    for (const auto& e : exits) {
        CHECK_THAT(e, Catch::Contains("exited with code 0"));
    }
}

TEST_CASE("invalid requests are refused with a reason and nothing else changes", "[process]") {
    with_pool(params_for(1), [](pool& p) -> asio::awaitable<void> {
        // A named variable: GCC 12 mishandles a braced aggregate temporary in co_await.
        request no_method;
        auto [ec, r] = co_await p.async_submit(no_method, tuple_awaitable);
        CHECK(ec == errc::invalid_request);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("method"));
        request bad = make_request("echo");
        bad.tensors.push_back(tensor(dtype::int64, {3}, "short"));
        auto [ec2, r2] = co_await p.async_submit(bad, tuple_awaitable);
        CHECK(ec2 == errc::invalid_request);
        CHECK_THAT(r2.diagnostics.summary, Catch::Contains("Tensor 0") && Catch::Contains("24"));
        auto [ec3, r3] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(!ec3);
    });
}

TEST_CASE("with prefetch, a crash fails only the running task, and prefetched ones still run",
          "[process][prefetch]") {
    auto params = params_for(2);
    params.prefetch = 2;
    with_pool(params, [](pool& p) -> asio::awaitable<void> {
        notifier changed(co_await asio::this_coro::executor);
        int ok = 0, died = 0, other = 0;
        auto count = [&](boost::system::error_code ec, response r) {
            if (ec && ec != errc::worker_died) {
                UNSCOPED_INFO("unexpected: " << ec.message() << ": " << r.diagnostics.summary);
            }
            (ec == errc::worker_died ? died : ec ? other : ok) += 1;
            changed.notify();
        };
        for (int i = 0; i < 40; ++i) {
            p.async_submit(
                make_request(i == 10 ? "crash" : "echo", i == 10 ? std::to_string(SIGKILL) : ""),
                count);
        }
        co_await changed.until([&] { return ok + died + other == 40; });
        CHECK(ok == 39);
        CHECK(died == 1);
        CHECK(other == 0);
    });
}

TEST_CASE("async_run completes once: a second call fails at once with already_started",
          "[process]") {
    run_coroutine([](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), params_for(1));
        int first_runs = 0;
        p.async_run([&](boost::system::error_code ec) {
            CHECK(!ec);
            ++first_runs;
        });
        auto [again] = co_await p.async_run(tuple_awaitable);
        CHECK(again == asio::error::already_started);
        CHECK(first_runs == 0);
        co_await p.async_shutdown(tuple_awaitable);
        CHECK(first_runs == 1);
        // After the pool has stopped, shutdown again completes at once, and tasks are refused.
        auto [ec] = co_await p.async_shutdown(tuple_awaitable);
        CHECK(!ec);
        auto [refused, r] = co_await p.async_submit(make_request("echo"), tuple_awaitable);
        CHECK(refused == errc::shutting_down);
    });
}

TEST_CASE("a pool destroyed while running kills and reaps its workers", "[process]") {
    {
        asio::io_context io{1};
        auto p = std::make_unique<pool>(io.get_executor(), params_for(3));
        p->async_run(asio::detached);
        bool answered = false;
        p->async_submit(make_request("echo"), [&](boost::system::error_code ec, response) {
            CHECK(!ec);
            answered = true;
            p.reset();  // destroyed from inside one of its own completions
        });
        io.run_for(30s);
        CHECK(answered);
    }
    CHECK(child_pids().empty());
}
