// From the SIGKILL of a busy worker to its caller's error, and to its replacement being
// ready, in both start modes, p50/p99 over many kills; beside the kernel's own floor in the
// same run: how long a plain parent waits to learn of a child's SIGKILL through a pidfd.
//
// Each round: the pool's one worker answers a task (so it is healthy and its death is
// replaced at once), takes a task that blocks, and is SIGKILLed; the caller's completion and
// the next `ready` event are timed from the kill. The restart intensity is raised so that
// the rounds, quicker than a real pool's deaths, measure recovery rather than pacing.
//
// Usage: torchpool-bench-kill-recovery [ROUNDS]     (default 200)
#include <torchpool/pool.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

double ms_since(clock_type::time_point t0) {
    return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

struct figures {
    std::vector<double> error_ms, ready_ms;
};

double quantile(std::vector<double> v, double q) {
    if (v.empty()) {
        return 0;
    }
    std::sort(v.begin(), v.end());
    return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))];
}

// The floor: a child that pauses, SIGKILLed; the parent polls its pidfd, then reaps it.
std::vector<double> kernel_floor(int rounds) {
    std::vector<double> ms;
    for (int i = 0; i < rounds; ++i) {
        const pid_t child = ::fork();
        if (child == 0) {
            for (;;) {
                ::pause();
            }
        }
        const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, child, 0));
        const auto t0 = clock_type::now();
        ::kill(child, SIGKILL);
        pollfd p{.fd = pidfd, .events = POLLIN, .revents = 0};
        ::poll(&p, 1, -1);
        ms.push_back(ms_since(t0));
        siginfo_t info{};
        ::waitid(P_PIDFD, static_cast<id_t>(pidfd), &info, WEXITED);
        ::close(pidfd);
    }
    return ms;
}

figures measure(const std::string& worker, torchpool::start_mode mode, int rounds) {
    asio::io_context io{1};
    figures f;
    std::optional<clock_type::time_point> killed_at;
    int ready_pid = 0;
    std::unique_ptr<asio::steady_timer> wake;
    torchpool::pool_params params{.worker = {.executable = worker, .start = mode},
                                  .workers = 1,
                                  .restart_limit = {.restarts = 100'000, .period = 1000ms}};
    params.on_worker_event = [&](const torchpool::worker_event& e) {
        if (e.what == torchpool::worker_event::kind::ready) {
            if (killed_at) {
                f.ready_ms.push_back(ms_since(*killed_at));
                killed_at.reset();
            }
            ready_pid = e.pid;
            wake->cancel();
        }
    };
    torchpool::pool pool(io.get_executor(), params);
    wake = std::make_unique<asio::steady_timer>(io);
    pool.async_run(asio::detached);
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            for (int i = 0; i < rounds; ++i) {
                while (ready_pid == 0) {
                    wake->expires_after(10s);
                    co_await wake->async_wait(asio::as_tuple(asio::use_awaitable));
                }
                // Healthy: it answered a task.
                co_await pool.async_submit(torchpool::request("noop"),
                                           asio::as_tuple(asio::use_awaitable));
                const int victim = std::exchange(ready_pid, 0);
                // The blocking task is sent before this coroutine resumes below.
                pool.async_submit(torchpool::request("block"),
                                  [&](boost::system::error_code, torchpool::response) {
                                      f.error_ms.push_back(ms_since(*killed_at));
                                  });
                co_await asio::post(io, asio::use_awaitable);
                killed_at = clock_type::now();
                ::kill(victim, SIGKILL);
            }
            while (ready_pid == 0) {
                wake->expires_after(10s);
                co_await wake->async_wait(asio::as_tuple(asio::use_awaitable));
            }
            co_await pool.async_shutdown(asio::use_awaitable);
        },
        asio::detached);
    io.run();
    return f;
}

}  // namespace

int main(int argc, char** argv) {
    const int rounds = argc > 1 ? std::atoi(argv[1]) : 200;
    const std::string worker =
        (std::filesystem::canonical("/proc/self/exe").parent_path() / "torchpool-bench-noop-worker")
            .string();
    const auto floor = kernel_floor(rounds);
    const auto direct = measure(worker, torchpool::start_mode::direct, rounds);
    const auto forked = measure(worker, torchpool::start_mode::fork_server, rounds);
    const double floor_p50 = quantile(floor, 0.5);
    std::printf("%d kills of a busy worker per mode, 2 cores; times from kill(), in ms\n\n",
                rounds);
    std::printf("%-34s %8s %8s %8s\n", "", "p50", "p99", "p50/floor");
    std::printf("%-34s %8.3f %8.3f %8s\n", "kernel floor (pidfd readable)", floor_p50,
                quantile(floor, 0.99), "1.00x");
    for (const auto& [name, f] :
         {std::pair{"direct", &direct}, std::pair{"fork server", &forked}}) {
        std::printf("%-34s %8.3f %8.3f %7.2fx\n", (std::string(name) + ": caller's error").c_str(),
                    quantile(f->error_ms, 0.5), quantile(f->error_ms, 0.99),
                    quantile(f->error_ms, 0.5) / floor_p50);
        std::printf("%-34s %8.3f %8.3f\n", (std::string(name) + ": replacement ready").c_str(),
                    quantile(f->ready_ms, 0.5), quantile(f->ready_ms, 0.99));
    }
    std::printf("\nfork server / direct, replacement ready p50: %.2fx\n",
                quantile(forked.ready_ms, 0.5) / quantile(direct.ready_ms, 0.5));
    return 0;
}
