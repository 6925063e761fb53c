// How long a host's event loop stalls while large tensors stream through its pool: the host
// as a service would be (a 4-thread io_context, the pool on one strand, a 1 ms steady_timer
// heartbeat on another, the callers on a third), with float32 tensors of 16 MiB (by default)
// going to 2 and then 32 workers, two tasks in flight per worker, for some seconds each. Each
// caller's tensor is in the pool's input memory (pool::allocate, filled once) and each worker
// reads all of it in place ("sink"). The heartbeat's lag is the figure a service sees; the
// pool's own part is measured too, by timing every function its strand runs.
//
// Beside each row, the floor in the same run: the same heartbeat on the same io_context while
// as many plain processes, with no pool, read a tensor of the same size in shared memory over
// and over. What lag the heartbeat shows there is the machine's (its cores busy with the
// workers' reading), not the pool's.
//
// Usage: torchpool-bench-tensor-lag [--mib N] [--seconds S] [--workers W,W,...]
#include "timed_executor.hpp"
#include <torchpool/pool.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using torchpool::bench::clock_type;
using torchpool::bench::handler_times;
using torchpool::bench::quantile;
using torchpool::bench::timed_executor;

namespace {

struct figures {
    double lag_p50 = 0, lag_p99 = 0, lag_max = 0;
    double fn_p99 = 0, fn_max = 0;
    double gb_per_s = 0;
    std::size_t tasks = 0;
};

// The floor: `processes` plain processes reading `bytes` of shared memory in a loop, no pool;
// the heartbeat's lag meanwhile (p50, p99, max).
figures floor_of(std::size_t processes, std::size_t bytes, std::chrono::seconds duration) {
    void* memory =
        ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    std::memset(memory, 1, bytes);
    std::vector<pid_t> children;
    for (std::size_t i = 0; i < processes; ++i) {
        const pid_t pid = ::fork();
        if (pid == 0) {
            volatile std::uint64_t sink = 0;
            const auto* words = static_cast<const std::uint64_t*>(memory);
            for (;;) {
                std::uint64_t sum = 0;
                for (std::size_t w = 0; w < bytes / 8; ++w) {
                    sum += words[w];
                }
                sink = sink + sum;
            }
        }
        children.push_back(pid);
    }
    asio::io_context io(4);
    std::atomic<bool> stop{false};
    std::vector<double> lags_ms;
    auto strand = asio::make_strand(io);
    torchpool::bench::start_heartbeat(strand, stop, lags_ms);
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
        threads.emplace_back([&] { io.run(); });
    }
    std::this_thread::sleep_for(duration);  // the length of the measurement
    stop = true;
    for (auto& t : threads) {
        t.join();
    }
    for (const pid_t pid : children) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
    }
    ::munmap(memory, bytes);
    std::sort(lags_ms.begin(), lags_ms.end());
    figures f;
    f.lag_p50 = quantile(lags_ms, 0.5);
    f.lag_p99 = quantile(lags_ms, 0.99);
    f.lag_max = quantile(lags_ms, 1.0);
    return f;
}

figures measure(const std::string& worker, std::size_t workers, std::size_t bytes,
                std::chrono::seconds duration) {
    asio::io_context io(4);
    handler_times times;
    const timed_executor pool_strand(asio::make_strand(io), &times);
    auto beat_strand = asio::make_strand(io);
    auto caller_strand = asio::make_strand(io);
    const std::size_t in_flight = 2 * workers;
    torchpool::pool pool(pool_strand, {.worker = {.executable = worker},
                                       .workers = workers,
                                       .queue_limit = 4 * in_flight,
                                       .shared_memory = {.input_bytes = (in_flight + 1) * bytes}});
    pool.async_run(asio::detached);
    std::vector<torchpool::tensor> inputs;
    for (std::size_t i = 0; i < in_flight; ++i) {
        inputs.push_back(
            pool.allocate(torchpool::dtype::float32, {static_cast<std::int64_t>(bytes / 4)}));
        std::memset(inputs.back().writable_bytes().data(), static_cast<int>(i), bytes);
    }
    std::atomic<bool> stop{false};
    std::atomic<bool> measuring{false};
    std::size_t done = 0, left = in_flight;
    std::promise<void> drained;
    std::function<void(std::size_t)> submit = [&](std::size_t i) {
        std::vector<torchpool::tensor> tensors{inputs[i]};
        pool.async_submit(torchpool::request("sink", {}, std::move(tensors)),
                          asio::bind_executor(caller_strand, [&, i](boost::system::error_code ec,
                                                                    torchpool::response r) {
                              if (ec) {
                                  std::fprintf(stderr, "tensor_lag: a task failed: %s\n",
                                               r.diagnostics.summary.c_str());
                                  std::exit(1);
                              }
                              if (measuring) {
                                  ++done;
                              }
                              if (stop) {
                                  if (--left == 0) {
                                      drained.set_value();
                                  }
                                  return;
                              }
                              submit(i);
                          }));
    };
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
        threads.emplace_back([&] { io.run(); });
    }
    asio::post(caller_strand, [&] {
        for (std::size_t i = 0; i < in_flight; ++i) {
            submit(i);
        }
    });
    std::this_thread::sleep_for(1s);  // the workers start and the stream settles: not measured
    {
        std::lock_guard lock(times.m);
        times.ms.clear();
    }
    std::vector<double> lags_ms;
    torchpool::bench::start_heartbeat(beat_strand, stop, lags_ms);
    asio::post(caller_strand, [&] { measuring = true; });
    const auto start = clock_type::now();
    std::this_thread::sleep_for(duration);  // the length of the measurement
    std::promise<std::size_t> tasks;
    asio::post(caller_strand, [&] {
        measuring = false;
        stop = true;
        tasks.set_value(done);
    });
    figures f;
    f.tasks = tasks.get_future().get();
    const double elapsed = std::chrono::duration<double>(clock_type::now() - start).count();
    drained.get_future().wait();
    std::promise<void> finished;
    pool.async_shutdown([&](boost::system::error_code) { finished.set_value(); });
    finished.get_future().wait();
    io.stop();
    for (auto& t : threads) {
        t.join();
    }
    std::sort(lags_ms.begin(), lags_ms.end());
    std::sort(times.ms.begin(), times.ms.end());
    f.lag_p50 = quantile(lags_ms, 0.5);
    f.lag_p99 = quantile(lags_ms, 0.99);
    f.lag_max = quantile(lags_ms, 1.0);
    f.fn_p99 = quantile(times.ms, 0.99);
    f.fn_max = quantile(times.ms, 1.0);
    f.gb_per_s = static_cast<double>(f.tasks) * static_cast<double>(bytes) / elapsed / 1e9;
    return f;
}

}  // namespace

int main(int argc, char** argv) {
    std::size_t mib = 16;
    std::chrono::seconds duration{4};
    std::vector<std::size_t> worker_counts{2, 32};
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string arg = argv[i];
        if (arg == "--mib") {
            mib = std::stoul(argv[i + 1]);
        } else if (arg == "--seconds") {
            duration = std::chrono::seconds(std::stoul(argv[i + 1]));
        } else if (arg == "--workers") {
            worker_counts.clear();
            std::stringstream in(argv[i + 1]);
            for (std::string item; std::getline(in, item, ',');) {
                worker_counts.push_back(std::stoul(item));
            }
        } else {
            std::fprintf(stderr, "usage: %s [--mib N] [--seconds S] [--workers W,W,...]\n",
                         argv[0]);
            return 2;
        }
    }
    if (argc % 2 == 0) {
        std::fprintf(stderr, "usage: %s [--mib N] [--seconds S] [--workers W,W,...]\n", argv[0]);
        return 2;
    }
    const auto worker =
        (std::filesystem::canonical("/proc/self/exe").parent_path() / "torchpool-bench-noop-worker")
            .string();
    std::printf(
        "Heartbeat lag (1 ms timer on another strand of a 4-thread io_context) while %zu MiB "
        "float32 tensors stream to workers (two tasks in flight per worker, each worker reading "
        "its tensor in place), %lld s per row:\n\n",
        mib, static_cast<long long>(duration.count()));
    std::printf("%-12s | %9s %9s %9s | %11s %11s | %8s %7s\n", "", "lag p50", "lag p99", "lag max",
                "pool fn p99", "pool fn max", "tasks", "GB/s");
    for (const auto w : worker_counts) {
        const auto f = measure(worker, w, mib << 20, duration);
        std::printf("%3zu workers  | %9.3f %9.3f %9.3f | %11.3f %11.3f | %8zu %7.2f\n", w,
                    f.lag_p50, f.lag_p99, f.lag_max, f.fn_p99, f.fn_max, f.tasks, f.gb_per_s);
        const auto b = floor_of(w, mib << 20, duration);
        std::printf("%3zu readers  | %9.3f %9.3f %9.3f | (no pool: the floor)\n", w, b.lag_p50,
                    b.lag_p99, b.lag_max);
        std::fflush(stdout);
    }
    std::printf(
        "(all times in ms; a pool fn is one function the pool's strand ran: how long "
        "the pool held an io thread)\n");
}
