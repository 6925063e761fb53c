// A host as users run one, built against the installed package: the pool on a strand of a
// 4-thread io_context, tasks submitted from several threads with callbacks, use_future and
// a coroutine, a 1 ms heartbeat on another strand, one io thread that leaves early, and
// workers SIGKILLed from outside. Exits 0 if every task completed, every worker death is
// one of ours, and no worker is left.
#include <torchpool/pool.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>

namespace asio = boost::asio;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s WORKER\n", argv[0]);
        return 2;
    }
    constexpr std::size_t workers = 8;
    constexpr int per_submitter = 100;
    asio::io_context io(4);
    std::mutex m;
    std::vector<int> ready_pids;
    std::atomic<std::size_t> ready{0};
    torchpool::pool pool(asio::make_strand(io),
                         {.worker = {.executable = argv[1]},
                          .workers = workers,
                          .restart_backoff = {.initial = 1ms},
                          .on_worker_event = [&](const torchpool::worker_event& e) {
                              if (e.what == torchpool::worker_event::kind::ready) {
                                  std::lock_guard lock(m);
                                  ready_pids.push_back(e.pid);
                                  ++ready;
                              }
                          }});
    std::promise<void> run_done;
    pool.async_run([&](boost::system::error_code) { run_done.set_value(); });

    // The heartbeat, on a strand of its own.
    auto beat_strand = asio::make_strand(io);
    std::atomic<bool> stop_beat{false};
    std::vector<double> lags_ms;
    asio::co_spawn(
        beat_strand,
        [&]() -> asio::awaitable<void> {
            asio::steady_timer timer(beat_strand);
            while (!stop_beat) {
                const auto due = std::chrono::steady_clock::now() + 1ms;
                timer.expires_at(due);
                co_await timer.async_wait(asio::use_awaitable);
                lags_ms.push_back(std::chrono::duration<double, std::milli>(
                                      std::chrono::steady_clock::now() - due)
                                      .count());
            }
        },
        asio::detached);

    // One io thread starts the workers and leaves; three stay.
    std::thread early([&] {
        while (ready < workers && io.run_one_for(30s) > 0) {
        }
    });
    early.join();
    std::vector<std::thread> io_threads;
    for (int i = 0; i < 3; ++i) {
        io_threads.emplace_back([&] { io.run(); });
    }

    std::atomic<int> completed{0}, succeeded{0}, died{0};
    auto count = [&](boost::system::error_code ec) {
        ++completed;
        if (!ec) {
            ++succeeded;
        } else if (ec == torchpool::errc::worker_died) {
            ++died;
        } else {
            std::fprintf(stderr, "unexpected error: %s\n", ec.message().c_str());
        }
    };
    std::vector<std::thread> submitters;
    submitters.emplace_back([&] {  // callbacks
        for (int i = 0; i < per_submitter; ++i) {
            pool.async_submit(
                torchpool::request("echo", "callback " + std::to_string(i)),
                [&](boost::system::error_code ec, torchpool::response) { count(ec); });
        }
    });
    submitters.emplace_back([&] {  // futures
        std::vector<std::future<torchpool::response>> results;
        for (int i = 0; i < per_submitter; ++i) {
            results.push_back(
                pool.async_submit(torchpool::request("echo", "future"), asio::use_future));
        }
        for (auto& r : results) {
            try {
                r.get();
                count({});
            } catch (const boost::system::system_error& e) {
                count(e.code());
            }
        }
    });
    std::promise<void> coroutine_done;
    asio::co_spawn(
        asio::make_strand(io),
        [&]() -> asio::awaitable<void> {
            for (int i = 0; i < per_submitter; ++i) {
                auto [ec, r] = co_await pool.async_submit(torchpool::request("echo", "coroutine"),
                                                          asio::as_tuple(asio::use_awaitable));
                count(ec);
            }
            coroutine_done.set_value();
        },
        asio::detached);
    // Workers killed from outside while all this runs.
    int kills = 0;
    for (int k = 0; k < 5; ++k) {
        int victim = 0;
        {
            std::lock_guard lock(m);
            if (!ready_pids.empty()) {
                victim = ready_pids[static_cast<std::size_t>(k * 7) % ready_pids.size()];
                std::erase(ready_pids, victim);
            }
        }
        if (victim > 0 && ::kill(victim, SIGKILL) == 0) {
            ++kills;
        }
        std::this_thread::sleep_for(3ms);  // the pace of the kills, not a synchronization
    }
    for (auto& t : submitters) {
        t.join();
    }
    coroutine_done.get_future().wait();

    auto stats =
        asio::post(pool.get_executor(), asio::use_future([&] { return pool.stats(); })).get();
    std::promise<void> shut;
    pool.async_shutdown([&](boost::system::error_code) { shut.set_value(); });
    shut.get_future().wait();
    run_done.get_future().wait();
    stop_beat = true;
    io.stop();
    for (auto& t : io_threads) {
        t.join();
    }
    std::sort(lags_ms.begin(), lags_ms.end());
    const double p99 = lags_ms.empty() ? 0 : lags_ms[lags_ms.size() * 99 / 100];
    std::printf(
        "embedded host: %d tasks completed (%d succeeded, %d lost to the %d workers we "
        "killed); %llu unexpected deaths; heartbeat p99 %.2f ms over %zu ticks\n",
        completed.load(), succeeded.load(), died.load(), kills,
        static_cast<unsigned long long>(stats.deaths_by_signal + stats.deaths_by_exit), p99,
        lags_ms.size());
    const bool ok =
        completed == 3 * per_submitter && succeeded + died == completed &&
        stats.deaths_by_signal + stats.deaths_by_exit <= static_cast<std::uint64_t>(kills) &&
        stats.spawned >= workers;
    return ok ? 0 : 1;
}
