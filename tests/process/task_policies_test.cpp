// Real processes, real signals: retries of idempotent tasks, poison tasks, cancellation that
// reaches the handler, waiting for room in a full queue, priorities, the event stream under a
// slow consumer, log lines, and every fault injection mode.
#include "../support/process_support.hpp"
#include <torchpool/error.hpp>
#include <torchpool/pool.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>

#include <catch2/catch.hpp>

#include <algorithm>

#include <signal.h>

using namespace torchpool;
using namespace torchpool::test;

namespace {

// Collects what the workers write, line by line, and wakes a coroutine waiting on `wake`.
struct line_log {
    std::vector<log_line> lines;  // their `text` views are gone after the call: see `texts`
    std::vector<std::string> texts;
    notifier* wake = nullptr;

    log_observer observer() {
        return [this](const log_line& l) {
            lines.push_back(l);
            texts.emplace_back(l.text);
            if (wake) {
                wake->notify();
            }
        };
    }
    bool saw(std::string_view text) const {
        return std::find(texts.begin(), texts.end(), text) != texts.end();
    }
};

pool_params with_faults(pool_params p) {
    p.faults.enabled = true;
    return p;
}

}  // namespace

TEST_CASE("an idempotent task whose worker crashes succeeds on another worker", "[process]") {
    auto params = with_faults(params_for(2));
    // The first run of every "echo" crashes its worker; the retry is left alone.
    params.faults.choose = [](const fault_target& t) {
        return t.attempt == 1 ? fault::crash(SIGSEGV) : fault{};
    };
    with_pool(params, [](pool& p) -> asio::awaitable<void> {
        auto [ec, r] =
            co_await p.async_submit(request("echo", "payload").with_retries(2), tuple_awaitable);
        CHECK(!ec);
        CHECK(r.payload == "payload");
        REQUIRE(r.attempts.size() == 2);
        CHECK(r.attempts[0].error == errc::worker_died);
        CHECK_THAT(r.attempts[0].summary, Catch::Contains("SIGSEGV"));
        CHECK(r.attempts[1].worker_pid == r.worker_pid);
        CHECK(r.attempts[0].worker_pid != r.worker_pid);
        CHECK(!r.attempts[1].error);
        CHECK(p.stats().retried == 1);

        // Not idempotent: it runs once and fails with the death.
        auto [ec2, r2] = co_await p.async_submit(request("echo", "x"), tuple_awaitable);
        CHECK(ec2 == errc::worker_died);
        CHECK(r2.attempts.empty());
    });
}

TEST_CASE("a task that kills two workers is a poison task: submitted again it is refused",
          "[process]") {
    auto params = params_for(2);
    params.poison = {.deaths = 2, .quarantine = 16};
    event_log events;
    params.on_worker_event = events.observer();
    with_pool(params, events, [&](pool& p) -> asio::awaitable<void> {
        auto [ec, r] =
            co_await p.async_submit(request("crash", "11").with_retries(5), tuple_awaitable);
        CHECK(ec == errc::poison_task);
        REQUIRE(r.attempts.size() == 2);
        CHECK(r.attempts[0].worker_pid != r.attempts[1].worker_pid);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("poison task"));
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("SIGSEGV"));
        CHECK(events.of(worker_event::kind::poison_task).size() == 1);

        // The same task again: refused at once, no worker dies for it.
        const auto deaths_before = p.stats().deaths_by_signal;
        auto [ec2, r2] = co_await p.async_submit(request("crash", "11"), tuple_awaitable);
        CHECK(ec2 == errc::poison_task);
        CHECK_THAT(r2.diagnostics.summary, Catch::Contains("quarantined"));
        CHECK(p.stats().deaths_by_signal == deaths_before);
        CHECK(p.stats().quarantined == 1);

        // Other tasks are served.
        auto [ec3, r3] = co_await p.async_submit(request("echo", "fine"), tuple_awaitable);
        CHECK(!ec3);
    });
}

TEST_CASE("a running handler sees a partial cancellation and stops: its worker stays",
          "[process]") {
    const auto mode = GENERATE(start_mode::direct, start_mode::fork_server);
    asio::cancellation_signal cancel;
    auto params = params_for(1);
    params.worker.start = mode;
    // The handler prints a line when it starts: that is when the caller cancels.
    params.on_log_line = [&](const log_line& line) {
        if (line.text == "cancellable started") {
            cancel.emit(asio::cancellation_type::partial);
        }
    };
    with_pool(params, [&](pool& p) -> asio::awaitable<void> {
        auto [ec, r] =
            co_await p.async_submit(request("cancellable", "60000"),
                                    asio::bind_cancellation_slot(cancel.slot(), tuple_awaitable));
        CHECK(ec == asio::error::operation_aborted);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("its handler stopped"));
        const int pid = r.worker_pid;
        CHECK(pid > 0);
        auto [ec2, r2] = co_await p.async_submit(request("pid"), tuple_awaitable);
        CHECK(!ec2);
        CHECK(r2.worker_pid == pid);  // not replaced
        CHECK(p.stats().killed_by_pool == 0);
    });
}

TEST_CASE("a total cancellation that comes too late delivers the result", "[process]") {
    asio::cancellation_signal cancel;
    auto params = params_for(1);
    params.on_log_line = [&](const log_line& line) {
        if (line.text == "ignore_cancel started") {
            cancel.emit(asio::cancellation_type::total);
        }
    };
    with_pool(params, [&](pool& p) -> asio::awaitable<void> {
        auto [ec, r] =
            co_await p.async_submit(request("ignore_cancel", "200"),
                                    asio::bind_cancellation_slot(cancel.slot(), tuple_awaitable));
        CHECK(!ec);
        CHECK(r.payload == "finished");
    });
}

TEST_CASE("a terminal cancellation completes at once: a worker that does not stop is killed",
          "[process]") {
    asio::cancellation_signal cancel;
    auto params = params_for(1);
    params.cancel_grace = 200ms;
    event_log events;
    params.on_worker_event = events.observer();
    params.on_log_line = [&](const log_line& line) {
        if (line.text == "ignore_cancel started") {
            cancel.emit(asio::cancellation_type::terminal);
        }
    };
    with_pool(params, events, [&](pool& p) -> asio::awaitable<void> {
        const auto before = std::chrono::steady_clock::now();
        auto [ec, r] =
            co_await p.async_submit(request("ignore_cancel", "60000"),
                                    asio::bind_cancellation_slot(cancel.slot(), tuple_awaitable));
        CHECK(ec == asio::error::operation_aborted);
        CHECK(std::chrono::steady_clock::now() - before < 30s);
        const int pid = r.worker_pid;
        // The worker does not answer within the grace: killed and replaced.
        co_await events.changed->until([&] {
            return !events.of(worker_event::kind::ready).empty() &&
                   events.of(worker_event::kind::ready).back().pid != pid;
        });
        CHECK(p.stats().killed_by_pool == 1);
        bool told = false;
        for (const auto& e : events.of(worker_event::kind::notice)) {
            told = told || e.description.find("cancel_grace") != std::string::npos;
        }
        CHECK(told);
        auto [ec2, r2] = co_await p.async_submit(request("pid"), tuple_awaitable);
        CHECK(!ec2);
        CHECK(r2.worker_pid != pid);
    });
}

TEST_CASE(
    "a full queue in wait mode admits tasks as room frees: deadlines and cancellation "
    "apply while they wait",
    "[process]") {
    auto params = params_for(1);
    params.queue_limit = 1;
    with_pool(params, [&](pool& p) -> asio::awaitable<void> {
        auto [warm, w] = co_await p.async_submit(request("echo"), tuple_awaitable);
        REQUIRE(!warm);  // the worker is ready: the first task below runs at once
        auto ex = co_await asio::this_coro::executor;
        int ok = 0;
        int finished = 0;
        std::vector<std::string> order;
        notifier done(ex);
        const auto submit = [&](request req) {
            const auto name = req.payload;
            p.async_submit(std::move(req), [&, name](boost::system::error_code ec, response r) {
                if (!ec) {
                    ++ok;
                    order.push_back(r.payload);
                }
                ++finished;
                done.notify();
            });
        };
        submit(request("sleep", "100"));  // runs
        submit(request("echo", "queued"));
        // The queue is full now.
        auto [full, r] = co_await p.async_submit(request("echo", "fails"), tuple_awaitable);
        CHECK(full == errc::overloaded);
        submit(request("echo", "w1").wait_when_full());
        submit(request("echo", "w2").wait_when_full());
        submit(request("echo", "w3").wait_when_full());
        auto [late, r2] = co_await p.async_submit(
            request("echo", "late").wait_when_full().with_timeout(20ms), tuple_awaitable);
        CHECK(late == errc::timeout);
        co_await done.until([&] { return finished == 5; });
        CHECK(ok == 5);
        CHECK(order == std::vector<std::string>{"slept", "queued", "w1", "w2", "w3"});
        CHECK(p.stats().waited_for_room == 4);
        CHECK(p.stats().waiting_for_room == 0);
    });
}

TEST_CASE("queued tasks of a higher priority run first", "[process]") {
    with_pool(params_for(1), [&](pool& p) -> asio::awaitable<void> {
        auto [warm, w] = co_await p.async_submit(request("echo"), tuple_awaitable);
        REQUIRE(!warm);  // the worker is ready: "sleep" runs at once, the others queue
        auto ex = co_await asio::this_coro::executor;
        std::vector<std::string> order;
        notifier done(ex);
        const auto submit = [&](request req) {
            p.async_submit(std::move(req), [&](boost::system::error_code ec, response r) {
                CHECK(!ec);
                order.push_back(r.payload);
                done.notify();
            });
        };
        submit(request("sleep", "50"));
        submit(request("echo", "low").with_priority(task_priority::low));
        submit(request("echo", "normal"));
        submit(request("echo", "high").with_priority(task_priority::high));
        co_await done.until([&] { return order.size() == 4; });
        CHECK(order == std::vector<std::string>{"slept", "high", "normal", "low"});
    });
}

TEST_CASE(
    "the event stream keeps the newest events for a slow consumer and says what it "
    "dropped",
    "[process]") {
    auto params = params_for(1);
    params.event_buffer = 8;
    with_pool(params, [&](pool& p) -> asio::awaitable<void> {
        // Ten deaths: started, ready and exited for each, while nobody reads the stream.
        for (int i = 0; i < 10; ++i) {
            auto [ec, r] = co_await p.async_submit(request("crash", "9"), tuple_awaitable);
            CHECK(ec == errc::worker_died);
        }
        auto [shut] = co_await p.async_shutdown(tuple_awaitable);
        CHECK(!shut);
        // First what was dropped, then the newest ones, until the stream ends.
        auto [ec, first] = co_await p.async_next_event(tuple_awaitable);
        CHECK(!ec);
        CHECK(first.what == worker_event::kind::events_dropped);
        CHECK_THAT(first.description, Catch::Contains("were dropped"));
        CHECK(p.stats().events_dropped > 0);
        std::size_t read = 0;
        std::vector<worker_event::kind> kinds;
        for (;;) {
            auto [ec2, e] = co_await p.async_next_event(tuple_awaitable);
            if (ec2 == asio::error::eof) {
                break;
            }
            REQUIRE(!ec2);
            kinds.push_back(e.what);
            ++read;
        }
        CHECK(read == 8);
        CHECK(kinds.back() == worker_event::kind::exited);
    });
}

TEST_CASE("a waiting event consumer is woken by the next event and can be cancelled", "[process]") {
    auto params = params_for(1);
    with_pool(params, [&](pool& p) -> asio::awaitable<void> {
        // Read up to the first worker's readiness as it happens.
        for (;;) {
            auto [ec, e] = co_await p.async_next_event(tuple_awaitable);
            REQUIRE(!ec);
            if (e.what == worker_event::kind::ready) {
                break;
            }
        }
        // Nothing happens now: a wait is cancelled, and a second consumer is refused.
        asio::cancellation_signal cancel;
        bool cancelled = false;
        p.async_next_event(asio::bind_cancellation_slot(
            cancel.slot(), [&](boost::system::error_code ec, worker_event) {
                cancelled = ec == asio::error::operation_aborted;
            }));
        auto [busy, e2] = co_await p.async_next_event(tuple_awaitable);
        CHECK(busy == asio::error::already_started);
        cancel.emit(asio::cancellation_type::terminal);
        auto [ec3, r] = co_await p.async_submit(request("exit", "3"), tuple_awaitable);
        CHECK(ec3 == errc::worker_died);
        CHECK(cancelled);
        // The death was kept for the next call.
        auto [ec4, e4] = co_await p.async_next_event(tuple_awaitable);
        CHECK(!ec4);
        CHECK(e4.what == worker_event::kind::exited);
    });
}

TEST_CASE("worker output reaches the log observer line by line, in order, with slot and pid",
          "[process]") {
    line_log log;
    auto& lines = log.lines;
    auto& texts = log.texts;
    auto& wake = log.wake;
    auto params = params_for(2);
    params.on_log_line = log.observer();
    with_pool(params, [&](pool& p) -> asio::awaitable<void> {
        notifier changed(co_await asio::this_coro::executor);
        wake = &changed;
        auto [ec, r] = co_await p.async_submit(request("print_lines", "300"), tuple_awaitable);
        CHECK(!ec);
        co_await changed.until([&] { return texts.size() >= 300; });
        wake = nullptr;
        REQUIRE(texts.size() == 300);
        for (std::size_t i = 0; i < texts.size(); ++i) {
            CHECK(texts[i] == "line " + std::to_string(i + 1));
            CHECK(lines[i].pid == r.worker_pid);
            CHECK(!lines[i].fork_server);
        }
        CHECK(lines[0].slot < 2);
    });
}

TEST_CASE("every fault injection mode provokes its failure for real", "[process]") {
    auto params = with_faults(params_for(1));
    params.memory = {.hard_limit_bytes = 64u << 20, .sample_interval = 20ms};
    with_pool(params, [&](pool& p) -> asio::awaitable<void> {
        const auto run = [&](fault f, std::string method = "echo",
                             std::chrono::milliseconds timeout = 0ms) {
            return p.async_submit(request(method, "x").with_fault(f).with_timeout(timeout),
                                  tuple_awaitable);
        };
        {
            auto [ec, r] = co_await run(fault::crash(SIGBUS));
            CHECK(ec == errc::worker_died);
            CHECK(r.diagnostics.signal == SIGBUS);
        }
        {
            auto [ec, r] = co_await run(fault::exit(7));
            CHECK(ec == errc::worker_died);
            CHECK(r.diagnostics.exit_code == 7);
        }
        {
            auto [ec, r] = co_await run(fault::hang(), "echo", 300ms);
            CHECK(ec == errc::timeout);
            CHECK(r.diagnostics.activity.has_value());
        }
        {
            // 128 MiB kept, then a task that runs while the pool samples its memory.
            auto [ec, r] = co_await run(fault::leak(128u << 20), "sleep", 0ms);
            CHECK(ec == errc::memory_limit);
        }
        {
            auto [ec, r] = co_await run(fault::delay(200ms));
            CHECK(!ec);
            CHECK(r.payload == "x");
            CHECK(r.diagnostics.task_run_time.count() == 0);  // success: no diagnostics
        }
        {
            auto [ec, r] = co_await run(fault::garbage());
            CHECK(ec == errc::protocol_error);
        }
        {
            auto [ec, r] = co_await run(fault::fail());
            CHECK(ec == errc::task_failed);
            CHECK(r.diagnostics.error_type == "torchpool::injected_fault");
        }
        CHECK(p.stats().succeeded == 1);
    });
}

TEST_CASE("a fault is refused when fault injection is off", "[process]") {
    with_pool(params_for(1), [&](pool& p) -> asio::awaitable<void> {
        auto [ec, r] =
            co_await p.async_submit(request("echo").with_fault(fault::crash()), tuple_awaitable);
        CHECK(ec == errc::invalid_request);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("pool_params::faults.enabled"));
        CHECK(p.stats().deaths_by_signal == 0);
    });
}

TEST_CASE("every cancellation type, on a task waiting for room, queued, prefetched and running",
          "[process]") {
    const auto type = GENERATE(asio::cancellation_type::terminal, asio::cancellation_type::partial,
                               asio::cancellation_type::total);
    auto params = params_for(1);
    params.prefetch = 1;
    params.queue_limit = 1;
    std::array<asio::cancellation_signal, 4> cancel;  // running, prefetched, queued, waiting
    line_log log;
    auto& wake = log.wake;
    params.on_log_line = log.observer();
    with_pool(params, [&](pool& p) -> asio::awaitable<void> {
        auto [warm, w] = co_await p.async_submit(request("pid"), tuple_awaitable);
        REQUIRE(!warm);
        notifier changed(co_await asio::this_coro::executor);
        std::array<boost::system::error_code, 4> errors;
        std::array<bool, 4> done{};
        const auto submit = [&](std::size_t i, request req) {
            p.async_submit(std::move(req),
                           asio::bind_cancellation_slot(
                               cancel[i].slot(), [&, i](boost::system::error_code ec, response) {
                                   errors[i] = ec;
                                   done[i] = true;
                                   changed.notify();
                               }));
        };
        submit(0, request("cancellable", "60000"));
        submit(1, request("echo", "prefetched"));
        submit(2, request("echo", "queued"));
        submit(3, request("echo", "waiting").wait_when_full());
        // The pool's state is as named once the first handler runs (it prints a line then).
        wake = &changed;
        co_await changed.until([&] { return log.saw("cancellable started"); });
        wake = nullptr;
        CHECK(p.stats().waiting_for_room == 1);
        for (std::size_t i = 3; i >= 1; --i) {
            cancel[i].emit(type);
            co_await changed.until([&] { return done[i]; });
            CHECK(errors[i] == asio::error::operation_aborted);
        }
        cancel[0].emit(type);
        co_await changed.until([&] { return done[0]; });
        CHECK(errors[0] == asio::error::operation_aborted);
        // The handler stopped (within the grace, for terminal): the same worker serves on.
        auto [ec, r] = co_await p.async_submit(request("pid"), tuple_awaitable);
        CHECK(!ec);
        CHECK(r.worker_pid == w.worker_pid);
        CHECK(p.stats().cancelled == 4);
        CHECK(p.stats().killed_by_pool == 0);
    });
}

TEST_CASE("the fork server's output reaches the log observer as its own", "[process]") {
    line_log log;
    auto& lines = log.lines;
    auto& texts = log.texts;
    auto& wake = log.wake;
    auto params = params_for(1, {"--exit-at-start", "3"});  // the server says why, and exits
    params.worker.start = start_mode::fork_server;
    params.on_log_line = log.observer();
    with_pool(params, [&](pool& p) -> asio::awaitable<void> {
        notifier changed(co_await asio::this_coro::executor);
        wake = &changed;
        co_await changed.until([&] { return !lines.empty(); });
        wake = nullptr;
        CHECK(lines[0].fork_server);
        CHECK(lines[0].slot == 0);
        CHECK(lines[0].pid > 0);
        CHECK(texts[0] == "fake_worker: failing at start as asked");
        CHECK(p.stats().fork_server_starts >= 1);
    });
}
