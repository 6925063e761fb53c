// Tensor bytes through the pool, beside the physical floor measured in the same run: how fast
// one float32 tensor of each size goes to a worker (one way: the worker answers with nothing)
// and back (echo: the worker answers with the same tensor): one worker with one task in
// flight (the host's CPU per task is measured there), then one worker and two workers with
// four in flight each (their ratio: what a second worker adds). The baselines, also between two
// processes:
//   memcpy     one copy of the bytes in-process (a reused buffer): the floor of any copy;
//   socket     the bytes written to a socketpair and read by another process, which answers
//              with one byte (or with the bytes, for echo);
//   memfd      the bytes copied into a shared memfd that the other process reads in place
//              (echo: it copies them into a second region that this process reads).
// Rates are the tensor's bytes per second of round trips (echo moves them twice in that time).
// For the pool, the host thread's CPU time per task is printed too (CLOCK_THREAD_CPUTIME_ID):
// the time in which no other worker's exit, reply or timer is handled.
//
// Usage: torchpool-bench-tensor-transfer [--seconds S] [--max-mib M]
#include "two_processes.hpp"
#include <torchpool/pool.hpp>

#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <time.h>
#include <vector>

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

namespace {

using torchpool::bench::peer;
using torchpool::bench::read_all;
using torchpool::bench::write_all;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// Reads every byte in place (a sum of 64-bit words), as a consumer of the tensor would.
std::uint64_t touch(const char* data, std::size_t size) {
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i + 8 <= size; i += 8) {
        std::uint64_t w;
        std::memcpy(&w, data + i, 8);
        sum += w;
    }
    return sum;
}

// Runs `round` until `seconds` passed (and at least 3 times); the rate in bytes/s of `size`.
double rate(std::size_t size, double seconds, const std::function<void()>& round) {
    round();  // warm up
    long rounds = 0;
    const auto start = clock_type::now();
    while (rounds < 3 || seconds_since(start) < seconds) {
        round();
        ++rounds;
    }
    return static_cast<double>(size) * static_cast<double>(rounds) / seconds_since(start);
}

double socket_rate(const std::string& bytes, bool echo, double seconds) {
    const std::size_t size = bytes.size();
    peer p([size, echo](int fd) {
        std::string buffer(size, '\0');
        const char done = 1;
        while (read_all(fd, buffer.data(), size) &&
               (echo ? write_all(fd, buffer.data(), size) : write_all(fd, &done, 1))) {
        }
    });
    std::string back(echo ? size : 1, '\0');
    return rate(size, seconds, [&] {
        write_all(p.fd(), bytes.data(), size);
        read_all(p.fd(), back.data(), back.size());
    });
}

double memfd_rate(const std::string& bytes, bool echo, double seconds) {
    const std::size_t size = bytes.size();
    const int memfd = static_cast<int>(::syscall(SYS_memfd_create, "tensor", 0));
    if (memfd < 0 || ::ftruncate(memfd, static_cast<off_t>(2 * size)) != 0) {
        std::perror("memfd");
        std::exit(1);
    }
    auto* region =
        static_cast<char*>(::mmap(nullptr, 2 * size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0));
    char* in = region;
    char* out = region + size;
    peer p([=](int fd) {
        char signal = 0;
        volatile std::uint64_t sink = 0;
        while (read_all(fd, &signal, 1)) {
            if (echo) {
                std::memcpy(out, in, size);
            } else {
                sink = sink + touch(in, size);
            }
            write_all(fd, &signal, 1);
        }
    });
    volatile std::uint64_t sink = 0;
    const double r = rate(size, seconds, [&] {
        std::memcpy(in, bytes.data(), size);
        char signal = 1;
        write_all(p.fd(), &signal, 1);
        read_all(p.fd(), &signal, 1);
        if (echo) {
            sink = sink + touch(out, size);
        }
    });
    ::munmap(region, 2 * size);
    ::close(memfd);
    return r;
}

double memcpy_rate(const std::string& bytes, double seconds) {
    std::string target(bytes.size(), '\0');
    return rate(bytes.size(), seconds, [&] {
        std::memcpy(target.data(), bytes.data(), bytes.size());
        asm volatile("" : : "r"(target.data()) : "memory");
    });
}

// Precise (the scheduler's own count), unlike getrusage's tick-sampled figures.
double thread_cpu_seconds() {
    timespec t{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

struct pool_figures {
    double rate = 0;         // tensor bytes per second
    double host_cpu_ms = 0;  // the host thread's CPU time per task, the caller's work left out
};

// How the caller gives the pool its tensor.
enum class source {
    caller_bytes,  // its own std::string, which submit copies into the pool's input memory
    allocated,     // a tensor from pool::allocate, filled in place (as the memfd baseline's
                   // copy into shared memory), which the pool does not copy
};

// Tasks of `method` with the tensor, `in_flight` at a time, until `seconds` passed (and at
// least 3 tasks completed after the warm-up).
// `inline_below`: the pool's parameter (tensors smaller go inline in the message).
pool_figures pool_rate(const std::string& worker, std::size_t workers, std::size_t in_flight,
                       const std::string& method, const std::string& bytes, double seconds,
                       source from, std::size_t inline_below = 16 * 1024) {
    asio::io_context io{1};
    torchpool::pool_params params{.worker = {.executable = worker},
                                  .workers = workers,
                                  .queue_limit = 1024,
                                  .max_frame_bytes = 2 * bytes.size() + (1u << 20)};
    params.shared_memory.inline_below = inline_below;
    torchpool::pool pool(io.get_executor(), std::move(params));
    pool.async_run(asio::detached);
    const auto elements = static_cast<std::int64_t>(bytes.size() / sizeof(float));
    long completed = 0, measured = 0;
    const long warm_up = static_cast<long>(in_flight);
    bool stopping = false;
    clock_type::time_point start;
    double cpu_start = 0, cpu_end = 0, elapsed = 0;
    volatile std::uint64_t sink = 0;
    double caller_cpu = 0;  // the caller's own work: making its tensor, reading its result
    std::function<void()> submit_one = [&] {
        // As a caller does: its bytes become the request's tensor (copied on submit), or it
        // fills a tensor in the pool's memory (not copied again).
        const double made_at = thread_cpu_seconds();
        torchpool::tensor t;
        if (from == source::allocated) {
            t = pool.allocate(torchpool::dtype::float32, {elements});
            std::memcpy(t.writable_bytes().data(), bytes.data(), bytes.size());
        } else {
            t = torchpool::tensor(torchpool::dtype::float32, {elements}, bytes);
        }
        caller_cpu += thread_cpu_seconds() - made_at;
        std::vector<torchpool::tensor> tensors;
        tensors.push_back(std::move(t));
        torchpool::request r(method, {}, std::move(tensors));
        pool.async_submit(std::move(r), [&](boost::system::error_code ec, torchpool::response res) {
            if (ec) {
                std::fprintf(stderr, "tensor_transfer: a task failed: %s\n",
                             res.diagnostics.summary.c_str());
                std::exit(1);
            }
            const double read_at = thread_cpu_seconds();
            for (const auto& out : res.tensors) {  // the caller reads its result in place
                const auto b = out.bytes();
                sink = sink + touch(reinterpret_cast<const char*>(b.data()), b.size());
            }
            res = {};
            caller_cpu += thread_cpu_seconds() - read_at;
            ++completed;
            if (completed == warm_up) {
                start = clock_type::now();
                cpu_start = thread_cpu_seconds();
                caller_cpu = 0;
            } else if (completed > warm_up) {
                ++measured;
            }
            if (!stopping && measured >= 3 && seconds_since(start) >= seconds) {
                stopping = true;
                elapsed = seconds_since(start);
                cpu_end = thread_cpu_seconds() - caller_cpu;
                pool.async_shutdown(asio::detached);
            }
            if (!stopping) {
                submit_one();
            }
        });
    };
    for (std::size_t i = 0; i < in_flight; ++i) {
        submit_one();
    }
    io.run();
    return {static_cast<double>(bytes.size()) * static_cast<double>(measured) / elapsed,
            (cpu_end - cpu_start) * 1e3 / static_cast<double>(measured)};
}

double median(std::vector<double> values) {
    std::sort(values.begin(), values.end());
    return values[values.size() / 2];
}

std::string size_name(std::size_t bytes) {
    return bytes >= (1u << 20) ? std::to_string(bytes >> 20) + " MiB"
                               : std::to_string(bytes >> 10) + " KiB";
}

}  // namespace

int main(int argc, char** argv) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    double seconds = 0.5;
    std::size_t max_mib = 64;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--seconds" && i + 1 < argc) {
            seconds = std::atof(argv[++i]);
        } else if (arg == "--max-mib" && i + 1 < argc) {
            max_mib = static_cast<std::size_t>(std::atol(argv[++i]));
        } else {
            std::fprintf(stderr,
                         "usage: torchpool-bench-tensor-transfer [--seconds S] [--max-mib M]\n"
                         "Measures float32 tensors through the pool beside memcpy, a socketpair "
                         "and a shared memfd, in the same run.\n");
            return 2;
        }
    }
    const auto worker = (std::filesystem::read_symlink("/proc/self/exe").parent_path() /
                         "torchpool-bench-noop-worker")
                            .string();
    std::printf(
        "memfd and alloc: medians of three runs each, alternated. GB/s of tensor bytes per round "
        "trip. host ms: the CPU per task of the one thread that\n"
        "runs the pool and the caller, less the caller's own work (making its tensor, reading\n"
        "the result). bytes: the caller's std::string, which submit copies into shared memory\n"
        "(counted in host ms); alloc: filled in place in pool::allocate's memory (as the memfd\n"
        "baseline's copy). 1w/2w: alloc, four tasks in flight.\n");
    std::printf("%-7s %-5s %6s %6s %6s | %6s %7s | %6s %7s %7s | %6s %6s %6s\n", "size", "mode",
                "memcpy", "socket", "memfd", "bytes", "host ms", "alloc", "host ms", "/memfd",
                "1w x4", "2w x4", "2w/1w");
    for (const std::size_t size :
         {std::size_t{4} << 10, std::size_t{64} << 10, std::size_t{1} << 20, std::size_t{16} << 20,
          std::size_t{64} << 20}) {
        if (size > (max_mib << 20)) {
            break;
        }
        std::string bytes(size, '\0');
        for (std::size_t i = 0; i < size; ++i) {
            bytes[i] = static_cast<char>(i * 2654435761u >> 24);
        }
        for (const bool echo : {false, true}) {
            const char* method = echo ? "echo" : "sink";
            const double mc = memcpy_rate(bytes, seconds);
            const double so = socket_rate(bytes, echo, seconds);
            // The pool's allocated path and its baseline alternately, three times each; their
            // medians are compared, since a shared machine's speed drifts within a run.
            std::vector<double> memfd_runs, alloc_runs, alloc_cpu;
            for (int round = 0; round < 3; ++round) {
                memfd_runs.push_back(memfd_rate(bytes, echo, seconds));
                const auto run = pool_rate(worker, 1, 1, method, bytes, seconds, source::allocated);
                alloc_runs.push_back(run.rate);
                alloc_cpu.push_back(run.host_cpu_ms);
            }
            const double mf = median(memfd_runs);
            const pool_figures alloc{median(alloc_runs), median(alloc_cpu)};
            const auto one = pool_rate(worker, 1, 1, method, bytes, seconds, source::caller_bytes);
            const auto one_x4 = pool_rate(worker, 1, 4, method, bytes, seconds, source::allocated);
            const auto two_x4 = pool_rate(worker, 2, 4, method, bytes, seconds, source::allocated);
            std::printf(
                "%-7s %-5s %6.2f %6.2f %6.2f | %6.2f %7.3f | %6.2f %7.3f %6.2fx | %6.2f %6.2f "
                "%5.2fx\n",
                size_name(size).c_str(), echo ? "echo" : "one", mc / 1e9, so / 1e9, mf / 1e9,
                one.rate / 1e9, one.host_cpu_ms, alloc.rate / 1e9, alloc.host_cpu_ms,
                alloc.rate / mf, one_x4.rate / 1e9, two_x4.rate / 1e9, two_x4.rate / one_x4.rate);
        }
    }
    // Where inline stops paying: the caller's bytes, echo, one task in flight, sent inline
    // (in the message, both ways) and through shared memory.
    std::printf(
        "\nThe caller's bytes, echo, one in flight: inline in the message against "
        "through shared memory (GB/s)\n%-7s %7s %7s %7s\n",
        "size", "inline", "shared", "ratio");
    for (const std::size_t size :
         {std::size_t{4} << 10, std::size_t{16} << 10, std::size_t{32} << 10, std::size_t{64} << 10,
          std::size_t{256} << 10, std::size_t{1} << 20}) {
        if (size > (max_mib << 20)) {
            break;
        }
        const std::string bytes(size, '\1');
        const auto in_message =
            pool_rate(worker, 1, 1, "echo", bytes, seconds, source::caller_bytes, size + 1);
        const auto shared =
            pool_rate(worker, 1, 1, "echo", bytes, seconds, source::caller_bytes, 0);
        std::printf("%-7s %7.2f %7.2f %6.2fx\n", size_name(size).c_str(), in_message.rate / 1e9,
                    shared.rate / 1e9, in_message.rate / shared.rate);
    }
    return 0;
}
