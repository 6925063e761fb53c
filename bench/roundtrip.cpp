// Round trip and throughput of a no-op task through the pool, beside a raw baseline
// measured in the same run: processes ping-ponging the same bytes over a socketpair with
// blocking reads and writes, which is the least any pool over a pipe can cost.
//
// Usage: torchpool-bench-roundtrip [--seconds S] [--round-trips N]
#include "two_processes.hpp"
#include "wire/codec.hpp"
#include <torchpool/pool.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <unistd.h>

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

struct latency {
    double p50_us = 0;
    double p99_us = 0;
};

latency summarize(std::vector<double> samples) {
    std::sort(samples.begin(), samples.end());
    auto at = [&](double q) { return samples[static_cast<std::size_t>(q * (samples.size() - 1))]; };
    return {at(0.50), at(0.99)};
}

double micros(clock_type::duration d) {
    return std::chrono::duration<double, std::micro>(d).count();
}

bool write_all(int fd, const std::string& bytes) {
    return torchpool::bench::write_all(fd, bytes.data(), bytes.size());
}

bool read_exact(int fd, std::string& buffer, std::size_t size) {
    buffer.resize(size);
    return torchpool::bench::read_all(fd, buffer.data(), size);
}

std::string frame_bytes(const torchpool::wire::frame& f) {
    auto b = f.asBytes();
    return {reinterpret_cast<const char*>(b.begin()), b.size()};
}

// A child that answers each request frame with the reply frame, with blocking I/O.
torchpool::bench::peer raw_peer(const std::string& request, const std::string& reply) {
    return torchpool::bench::peer([&](int fd) {
        std::string buffer;
        while (read_exact(fd, buffer, request.size()) && write_all(fd, reply)) {
        }
    });
}

latency raw_latency(const std::string& request, const std::string& reply, int round_trips) {
    const auto peer = raw_peer(request, reply);
    std::string buffer;
    std::vector<double> samples;
    samples.reserve(round_trips);
    for (int i = 0; i < round_trips + 1000; ++i) {
        const auto start = clock_type::now();
        write_all(peer.fd(), request);
        read_exact(peer.fd(), buffer, reply.size());
        if (i >= 1000) {  // the first thousand warm up
            samples.push_back(micros(clock_type::now() - start));
        }
    }
    return summarize(std::move(samples));
}

double raw_throughput(const std::string& request, const std::string& reply, int pairs,
                      std::chrono::duration<double> duration) {
    std::atomic<bool> stop{false};
    std::atomic<long> total{0};
    std::vector<std::thread> threads;
    for (int p = 0; p < pairs; ++p) {
        threads.emplace_back([&] {
            const auto peer = raw_peer(request, reply);
            std::string buffer;
            long count = 0;
            while (!stop.load(std::memory_order_relaxed)) {
                write_all(peer.fd(), request);
                read_exact(peer.fd(), buffer, reply.size());
                ++count;
            }
            total += count;
        });
    }
    const auto start = clock_type::now();
    std::this_thread::sleep_for(duration);  // the measurement window, not synchronization
    stop = true;
    for (auto& t : threads) {
        t.join();
    }
    return static_cast<double>(total) /
           std::chrono::duration<double>(clock_type::now() - start).count();
}

torchpool::pool_params pool_for(const std::string& worker, std::size_t workers,
                                std::size_t prefetch = 0) {
    return {.worker = {.executable = worker},
            .workers = workers,
            .queue_limit = 100'000,
            .prefetch = prefetch};
}

latency pool_latency(const std::string& worker, std::size_t workers, int round_trips) {
    asio::io_context io{1};
    torchpool::pool pool(io.get_executor(), pool_for(worker, workers));
    pool.async_run(asio::detached);
    std::vector<double> samples;
    samples.reserve(round_trips);
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            const torchpool::request noop("noop");
            for (int i = 0; i < round_trips + 1000; ++i) {
                const auto start = clock_type::now();
                auto [ec, r] =
                    co_await pool.async_submit(noop, asio::as_tuple(asio::use_awaitable));
                if (ec) {
                    std::fprintf(stderr, "task failed: %s\n", r.diagnostics.summary.c_str());
                    std::exit(1);
                }
                if (i >= 1000) {
                    samples.push_back(micros(clock_type::now() - start));
                }
            }
            co_await pool.async_shutdown(asio::use_awaitable);
        },
        asio::detached);
    io.run();
    return summarize(std::move(samples));
}

double pool_throughput(const std::string& worker, std::size_t workers, std::size_t prefetch,
                       std::chrono::duration<double> duration) {
    asio::io_context io{1};
    torchpool::pool pool(io.get_executor(), pool_for(worker, workers, prefetch));
    pool.async_run(asio::detached);
    const torchpool::request noop("noop");
    long completed = 0;
    bool measuring = false, stopping = false;
    clock_type::time_point start, end;
    const long warm_up = 2000;
    std::function<void()> submit_one = [&] {
        pool.async_submit(noop, [&](boost::system::error_code ec, torchpool::response r) {
            if (ec) {
                std::fprintf(stderr, "task failed: %s\n", r.diagnostics.summary.c_str());
                std::exit(1);
            }
            ++completed;
            if (!measuring && completed == warm_up) {
                measuring = true;
                completed = 0;
                start = clock_type::now();
            }
            if (measuring && !stopping && clock_type::now() - start >= duration) {
                stopping = true;
                end = clock_type::now();
                pool.async_shutdown(asio::detached);
            }
            if (!stopping) {
                submit_one();
            }
        });
    };
    // Enough in flight that no worker ever waits for the supervisor.
    for (std::size_t i = 0; i < 16 * workers; ++i) {
        submit_one();
    }
    io.run();
    return static_cast<double>(completed) / std::chrono::duration<double>(end - start).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    double seconds = 1.0;
    int round_trips = 5'000;
    int repeats = 5;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--seconds" && i + 1 < argc) {
            seconds = std::atof(argv[++i]);
        } else if (arg == "--round-trips" && i + 1 < argc) {
            round_trips = std::atoi(argv[++i]);
        } else if (arg == "--repeats" && i + 1 < argc) {
            repeats = std::max(1, std::atoi(argv[++i]));
        } else {
            std::printf(
                "Usage: %s [--seconds S] [--round-trips N] [--repeats R]\n"
                "Measures a no-op task through a torchpool pool (round-trip latency with one task\n"
                "outstanding, throughput with many) beside raw socketpair ping-pong processes.\n"
                "Pool and baseline are measured alternately, R times, and the medians reported,\n"
                "because a shared virtual machine's speed drifts from one second to the next.\n",
                argv[0]);
            return arg == "--help" ? 0 : 64;
        }
    }
    const auto worker = (std::filesystem::read_symlink("/proc/self/exe").parent_path() /
                         "torchpool-bench-noop-worker")
                            .string();
    // The raw peers exchange exactly the bytes the pool exchanges for a no-op task.
    torchpool::request noop("noop");
    const std::string request = frame_bytes(torchpool::wire::encode_request(1, 0, noop).joined());
    const std::string reply =
        frame_bytes(torchpool::wire::encode(torchpool::wire::reply_msg{.id = 1}));
    const std::chrono::duration<double> window(seconds);

    std::printf(
        "no-op task: request %zu bytes, reply %zu bytes; %d round trips and %.1f s "
        "throughput windows per measurement; medians of %d alternating repeats\n\n",
        request.size(), reply.size(), round_trips, seconds, repeats);

    struct figures {
        std::vector<double> raw_p50, raw_p99, pool_p50, pool_p99, raw_tp, pool_tp, prefetch_tp,
            latency_ratio, tp_ratio, prefetch_ratio;
    };
    figures by_workers[2];
    for (int r = 0; r < repeats; ++r) {
        for (std::size_t workers : {1u, 2u}) {
            auto& f = by_workers[workers - 1];
            const auto raw_lat = raw_latency(request, reply, round_trips);
            const auto pool_lat = pool_latency(worker, workers, round_trips);
            const double raw_tp = raw_throughput(request, reply, static_cast<int>(workers), window);
            const double pool_tp = pool_throughput(worker, workers, 0, window);
            const double prefetch_tp = pool_throughput(worker, workers, 2, window);
            f.raw_p50.push_back(raw_lat.p50_us);
            f.raw_p99.push_back(raw_lat.p99_us);
            f.pool_p50.push_back(pool_lat.p50_us);
            f.pool_p99.push_back(pool_lat.p99_us);
            f.raw_tp.push_back(raw_tp);
            f.pool_tp.push_back(pool_tp);
            f.prefetch_tp.push_back(prefetch_tp);
            f.latency_ratio.push_back(pool_lat.p50_us / raw_lat.p50_us);
            f.tp_ratio.push_back(pool_tp / raw_tp);
            f.prefetch_ratio.push_back(prefetch_tp / raw_tp);
        }
        std::fprintf(stderr, "repeat %d of %d done\n", r + 1, repeats);
    }

    std::printf("%-44s %10s %10s %12s\n", "", "p50 (us)", "p99 (us)", "tasks/s");
    for (std::size_t workers : {1u, 2u}) {
        auto& f = by_workers[workers - 1];
        const std::string n = std::to_string(workers);
        std::printf("%-44s %10.1f %10.1f %12.0f\n",
                    ("raw ping-pong, " + n + " pair(s), blocking I/O").c_str(), median(f.raw_p50),
                    median(f.raw_p99), median(f.raw_tp));
        std::printf("%-44s %10.1f %10.1f %12.0f\n", ("pool, " + n + " worker(s)").c_str(),
                    median(f.pool_p50), median(f.pool_p99), median(f.pool_tp));
        std::printf("%-44s %10s %10s %12.0f\n", ("pool, " + n + " worker(s), prefetch 2").c_str(),
                    "", "", median(f.prefetch_tp));
        std::printf(
            "  ratios: p50 round trip pool/raw %.2fx (target <= 1.5x); throughput "
            "pool/raw %.0f%%, with prefetch 2 %.0f%% (target >= 80%%)\n\n",
            median(f.latency_ratio), 100 * median(f.tp_ratio), 100 * median(f.prefetch_ratio));
    }
    return 0;
}
