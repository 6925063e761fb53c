// Helpers for tests that run a real pool with real child processes.
#pragma once

#include <torchpool/pool.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace torchpool::test {

namespace asio = boost::asio;
using namespace std::chrono_literals;

inline constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

/// Parameters for the fake worker binary (tests/process/fake_worker.cpp).
/// Under a sanitizer build, the sanitizers' own signal handlers are turned off in the
/// workers, so that a worker dies of the signal it raises on purpose, as in production.
inline worker_params fake_worker(std::vector<std::string> args = {}) {
    const std::string own_signals =
        "handle_segv=0:handle_sigbus=0:handle_abort=0:handle_sigfpe=0:handle_sigill=0";
    return {.executable = TORCHPOOL_FAKE_WORKER,
            .args = std::move(args),
            .env = {"ASAN_OPTIONS=" + own_signals, "TSAN_OPTIONS=" + own_signals}};
}

inline request make_request(std::string method, std::string payload = {},
                            std::chrono::milliseconds timeout = 0ms) {
    return request(std::move(method), std::move(payload)).with_timeout(timeout);
}

/// Runs the coroutine `body()` on `io` until it finishes, for at most `limit`; fails the
/// test if it did not finish (a hang) and rethrows what it threw. Other work on `io` (a
/// pool's async_run) may outlive it: `io` is run only until the coroutine is done.
template <class Body>
void run_coroutine_on(asio::io_context& io, Body body, std::chrono::seconds limit = 60s) {
    bool finished = false;
    std::exception_ptr failure;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            co_await body();
            finished = true;
        },
        [&](std::exception_ptr e) {
            failure = e;
            finished = true;
        });
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!finished && std::chrono::steady_clock::now() < deadline) {
        io.run_one_until(deadline);
    }
    if (failure) {
        std::rethrow_exception(failure);
    }
    REQUIRE(finished);
}

/// Runs `body(io)` as a coroutine on a fresh io_context, for at most `limit`; fails the test
/// if it did not finish (a hang) and rethrows what it threw. Unlike run_coroutine_on, `io`
/// then runs until it has no work left (a pool's async_run has completed).
template <class Body>
void run_coroutine(Body body, std::chrono::seconds limit = 60s) {
    asio::io_context io{1};
    run_coroutine_on(
        io, [&] { return body(io); }, limit);
    io.run_for(limit);
}

/// Pids of this process's children that still exist (running or zombie).
std::vector<int> child_pids();

/// Parameters of a pool of `workers` fake workers with short grace and backoff.
inline pool_params params_for(std::size_t workers, std::vector<std::string> args = {}) {
    return {.worker = fake_worker(std::move(args)),
            .workers = workers,
            .stop_grace = 1000ms,
            .restart_backoff = {.initial = 10ms, .max = 100ms}};
}

/// Number of file descriptors this process has open.
inline std::size_t open_fd_count() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& entry :
         std::filesystem::directory_iterator("/proc/self/fd")) {
        ++n;
    }
    return n;
}

/// A process's state letter and parent, from /proc/PID/stat; nullopt once it is gone.
struct proc_stat {
    char state = 0;
    int ppid = 0;
};
std::optional<proc_stat> read_proc_stat(int pid);

/// Pids of this process's children that have exited and were not reaped (zombies).
std::vector<int> zombie_children();

}  // namespace torchpool::test

#include <boost/asio/steady_timer.hpp>

#include <functional>
#include <optional>

namespace torchpool::test {

/// Lets a coroutine wait, without polling, until a condition that other handlers change
/// becomes true: they call `notify()` after changing it.
class notifier {
public:
    explicit notifier(asio::any_io_executor ex) : timer_(std::move(ex)) {}

    void notify() { timer_.cancel(); }

    /// Waits until `condition()` holds; fails the test if it does not within `limit`.
    asio::awaitable<void> until(std::function<bool()> condition,
                                std::chrono::milliseconds limit = 20s) {
        const auto deadline = std::chrono::steady_clock::now() + limit;
        while (!condition()) {
            if (std::chrono::steady_clock::now() >= deadline) {
                FAIL("condition not reached within " << limit.count() << " ms");
            }
            timer_.expires_at(deadline);
            co_await timer_.async_wait(tuple_awaitable);
        }
    }

private:
    asio::steady_timer timer_;
};

// Collects the pool's events, and wakes a coroutine waiting on `changed` at each one.
struct event_log {
    std::vector<worker_event> all;
    notifier* changed = nullptr;

    /// While it lives (a local of the test's coroutine, made before the pool), events wake
    /// waiting coroutines; it detaches itself however the coroutine ends.
    class listener {
    public:
        listener(event_log& log, asio::any_io_executor ex) : log_(log), notifier_(std::move(ex)) {
            log_.changed = &notifier_;
        }
        ~listener() { log_.changed = nullptr; }
        listener(const listener&) = delete;
        listener& operator=(const listener&) = delete;

    private:
        event_log& log_;
        notifier notifier_;
    };

    worker_event_observer observer() {
        return [this](const worker_event& e) {
            all.push_back(e);
            if (changed) {
                changed->notify();
            }
        };
    }
    std::vector<worker_event> of(worker_event::kind k) const {
        std::vector<worker_event> out;
        for (const auto& e : all) {
            if (e.what == k) {
                out.push_back(e);
            }
        }
        return out;
    }
};

template <class Body>
void run_pool(pool_params params, event_log* events, Body body, std::chrono::seconds limit) {
    run_coroutine(
        [&](asio::io_context& io) -> asio::awaitable<void> {
            std::optional<event_log::listener> listening;
            if (events) {
                listening.emplace(*events, io.get_executor());
            }
            pool p(io.get_executor(), std::move(params));
            bool run_done = false;
            p.async_run([&](boost::system::error_code ec) {
                CHECK(!ec);
                run_done = true;
            });
            co_await body(p);
            auto [ec] = co_await p.async_shutdown(tuple_awaitable);
            CHECK(!ec);
            CHECK(run_done);
            CHECK(child_pids().empty());
        },
        limit);
}

/// Runs a pool for the test body, then shuts it down and checks that the run completed and
/// that no child is left.
template <class Body>
void with_pool(pool_params params, Body body, std::chrono::seconds limit = 60s) {
    run_pool(std::move(params), nullptr, std::move(body), limit);
}

/// As with_pool, with `events` woken by the pool's events (`params.on_worker_event` must
/// feed it: events.observer(), or an observer that calls it).
template <class Body>
void with_pool(pool_params params, event_log& events, Body body, std::chrono::seconds limit = 60s) {
    run_pool(std::move(params), &events, std::move(body), limit);
}

}  // namespace torchpool::test
