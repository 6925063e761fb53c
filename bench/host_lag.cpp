// How long a host's event loop stalls while its pool restarts workers that are SIGKILLed,
// with a small heap and a large one, side by side in one run.
//
// The host is as a service would be: a 4-thread io_context, the pool on one strand, a 1 ms
// steady_timer heartbeat on another. Once every worker is ready, a separate thread
// SIGKILLs a random ready worker every few ms and the pool restarts them; the heartbeat
// records how late each tick runs. Starting a worker must not copy the host's address
// space (that is what made a 4 GiB host stall for hundreds of milliseconds), so the figures
// with the large heap should match those with the small one.
//
// The heartbeat's lag also counts what the machine does (the restarted workers' execs
// compete for its cores), so the pool's own part is measured directly as well: its strand
// is wrapped in an executor that times every function it runs for the pool, which is how
// long the pool kept a thread of the host's io_context.
//
// Usage: torchpool-bench-host-lag [--workers N] [--seconds S] [--kill-every-ms MS]
//                                 [--heaps MIB,MIB,...]
#include "timed_executor.hpp"
#include <torchpool/pool.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <signal.h>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

using torchpool::bench::handler_times;
using torchpool::bench::quantile;
using torchpool::bench::timed_executor;

struct options {
    std::size_t workers = 64;
    std::chrono::seconds duration{4};
    std::chrono::milliseconds kill_every{5};
    std::vector<std::size_t> heaps_mib{16, 4096};
};

struct lag {
    double p50_ms = 0, p99_ms = 0, max_ms = 0;
    std::size_t ticks = 0, kills = 0, restarts = 0;
    double handler_p99_ms = 0, handler_max_ms = 0;  // the pool's own functions
    std::size_t handlers = 0;
};

lag measure(const std::string& worker, const options& opt, std::size_t heap_mib) {
    // The host's heap, every page touched, as a service holding caches or models would.
    std::vector<char> heap(heap_mib << 20);
    for (std::size_t i = 0; i < heap.size(); i += 4096) {
        heap[i] = 1;
    }

    asio::io_context io(4);
    handler_times times;
    const timed_executor pool_strand(asio::make_strand(io), &times);
    auto beat_strand = asio::make_strand(io);
    std::mutex m;
    std::condition_variable changed;
    std::vector<int> ready;  // pids of ready workers
    torchpool::pool pool(pool_strand,
                         {.worker = {.executable = worker},
                          .workers = opt.workers,
                          .restart_backoff = {.initial = 1ms, .max = 20ms},
                          .on_worker_event = [&](const torchpool::worker_event& e) {
                              std::lock_guard lock(m);
                              if (e.what == torchpool::worker_event::kind::ready) {
                                  ready.push_back(e.pid);
                              } else if (e.what == torchpool::worker_event::kind::exited) {
                                  std::erase(ready, e.pid);
                              }
                              changed.notify_all();
                          }});
    pool.async_run(asio::detached);
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
        threads.emplace_back([&] { io.run(); });
    }
    {
        std::unique_lock lock(m);
        changed.wait(lock, [&] { return ready.size() == opt.workers; });
    }

    {
        std::lock_guard lock(times.m);
        times.ms.clear();  // from the first kill on
    }
    std::atomic<bool> stop{false};
    std::vector<double> lags_ms;
    torchpool::bench::start_heartbeat(beat_strand, stop, lags_ms);

    lag result;
    std::mt19937 random(42);
    const auto end = clock_type::now() + opt.duration;
    while (clock_type::now() < end) {
        int victim = 0;
        {
            std::lock_guard lock(m);
            if (!ready.empty()) {
                const auto i =
                    std::uniform_int_distribution<std::size_t>(0, ready.size() - 1)(random);
                victim = ready[i];
                ready.erase(ready.begin() + static_cast<std::ptrdiff_t>(i));
            }
        }
        if (victim > 0 && ::kill(victim, SIGKILL) == 0) {
            ++result.kills;
        }
        std::this_thread::sleep_for(opt.kill_every);  // the pace of the kills
    }
    stop = true;
    std::promise<torchpool::pool_stats> stats;
    asio::post(pool_strand, [&] { stats.set_value(pool.stats()); });
    result.restarts = stats.get_future().get().restarts;
    std::promise<void> done;
    pool.async_shutdown([&](boost::system::error_code) { done.set_value(); });
    done.get_future().wait();
    io.stop();
    for (auto& t : threads) {
        t.join();
    }

    std::sort(lags_ms.begin(), lags_ms.end());
    result.ticks = lags_ms.size();
    result.p50_ms = quantile(lags_ms, 0.50);
    result.p99_ms = quantile(lags_ms, 0.99);
    result.max_ms = quantile(lags_ms, 1.0);
    std::sort(times.ms.begin(), times.ms.end());
    result.handlers = times.ms.size();
    result.handler_p99_ms = quantile(times.ms, 0.99);
    result.handler_max_ms = quantile(times.ms, 1.0);
    return result;
}

std::vector<std::size_t> parse_list(const char* text) {
    std::vector<std::size_t> values;
    std::stringstream in(text);
    for (std::string item; std::getline(in, item, ',');) {
        values.push_back(std::stoul(item));
    }
    return values;
}

}  // namespace

int main(int argc, char** argv) {
    options opt;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--workers") == 0) {
            opt.workers = std::stoul(argv[i + 1]);
        } else if (std::strcmp(argv[i], "--seconds") == 0) {
            opt.duration = std::chrono::seconds(std::stoul(argv[i + 1]));
        } else if (std::strcmp(argv[i], "--kill-every-ms") == 0) {
            opt.kill_every = std::chrono::milliseconds(std::stoul(argv[i + 1]));
        } else if (std::strcmp(argv[i], "--heaps") == 0) {
            opt.heaps_mib = parse_list(argv[i + 1]);
        } else {
            std::fprintf(stderr,
                         "usage: %s [--workers N] [--seconds S] [--kill-every-ms MS] "
                         "[--heaps MIB,MIB,...]\n",
                         argv[0]);
            return 2;
        }
    }
    const auto worker =
        (std::filesystem::canonical("/proc/self/exe").parent_path() / "torchpool-bench-noop-worker")
            .string();
    std::printf(
        "Heartbeat lag (1 ms timer on another strand of a 4-thread io_context) while "
        "%zu direct-mode workers are SIGKILLed (one every %lld ms) and restarted, for "
        "%lld s per heap:\n\n",
        opt.workers, static_cast<long long>(opt.kill_every.count()),
        static_cast<long long>(opt.duration.count()));
    std::printf("%10s | %10s %10s %10s %8s | %12s %12s %9s | %8s %9s\n", "heap", "lag p50",
                "lag p99", "lag max", "ticks", "pool fn p99", "pool fn max", "pool fns", "kills",
                "restarts");
    std::vector<lag> results;
    for (std::size_t mib : opt.heaps_mib) {
        results.push_back(measure(worker, opt, mib));
        const auto& r = results.back();
        std::printf("%6zu MiB | %10.3f %10.3f %10.3f %8zu | %12.3f %12.3f %9zu | %8zu %9zu\n", mib,
                    r.p50_ms, r.p99_ms, r.max_ms, r.ticks, r.handler_p99_ms, r.handler_max_ms,
                    r.handlers, r.kills, r.restarts);
        std::fflush(stdout);
    }
    std::printf(
        "(all in ms; a pool fn is one function the pool's strand ran: how long the "
        "pool held an io thread)\n");
    if (results.size() >= 2 && results.front().p99_ms > 0 && results.front().handler_max_ms > 0) {
        std::printf(
            "\nwith %zu MiB / with %zu MiB: lag p99 %.2fx, pool fn p99 %.2fx, pool fn max "
            "%.2fx\n",
            opt.heaps_mib.back(), opt.heaps_mib.front(),
            results.back().p99_ms / results.front().p99_ms,
            results.back().handler_p99_ms / results.front().handler_p99_ms,
            results.back().handler_max_ms / results.front().handler_max_ms);
    }
}
