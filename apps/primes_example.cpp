// torchpool-primes-example: a pool of worker processes doing real work, one of which is killed on
// purpose, to show what a caller learns and how the pool carries on.
#include <torchpool/pool.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

struct options {
    std::size_t workers = std::max(2u, std::thread::hardware_concurrency());
    int tasks = 300;
};

void usage(const char* argv0) {
    std::printf(
        "Usage: %s [--workers N] [--tasks N]\n\n"
        "Starts a torchpool pool of worker processes (torchpool-primes-worker, next to this\n"
        "program), runs N prime-counting tasks through it, crashes one worker on purpose in\n"
        "the middle, and prints what the failed task was told, the replacement of the worker,\n"
        "and the pool's statistics.\n\n"
        "  --workers N   worker processes (default: the number of cores, at least 2)\n"
        "  --tasks N     tasks to run (default: 300)\n",
        argv0);
}

// primes_below[n] = number of primes < n, for checking the workers' answers.
std::vector<std::uint32_t> prime_counts(std::size_t limit) {
    std::vector<bool> composite(limit, false);
    std::vector<std::uint32_t> below(limit + 1, 0);
    for (std::size_t k = 2; k < limit; ++k) {
        if (!composite[k]) {
            for (std::size_t m = k * k; m < limit; m += k) {
                composite[m] = true;
            }
        }
        below[k + 1] = below[k] + (composite[k] ? 0 : 1);
    }
    return below;
}

asio::awaitable<void> demo(torchpool::pool& pool, const options& opt, int& exit_code) {
    constexpr auto tuple = asio::as_tuple(asio::use_awaitable);
    const auto start = std::chrono::steady_clock::now();
    int done = 0, correct = 0, wrong = 0, failed = 0;
    bool crash_reported = false;

    // All tasks in flight at once; each completion is checked against a local count.
    auto ex = co_await asio::this_coro::executor;
    const auto expected = prime_counts(20'000 + 100 * static_cast<std::size_t>(opt.tasks));
    asio::steady_timer all_done(ex, asio::steady_timer::time_point::max());
    for (int i = 0; i < opt.tasks; ++i) {
        const std::uint64_t n = 20'000 + 100 * static_cast<std::uint64_t>(i);
        pool.async_submit(torchpool::request("count_primes", std::to_string(n)),
                          [&, n](boost::system::error_code ec, torchpool::response r) {
                              ++done;
                              if (ec) {
                                  ++failed;
                                  std::printf("  task for n=%llu failed: %s\n",
                                              static_cast<unsigned long long>(n),
                                              r.diagnostics.summary.c_str());
                              } else if (r.payload == std::to_string(expected[n])) {
                                  ++correct;
                              } else {
                                  ++wrong;
                              }
                              if (done % 100 == 0 || done == opt.tasks) {
                                  std::printf("  %d of %d tasks done\n", done, opt.tasks);
                              }
                              if (done == opt.tasks) {
                                  all_done.cancel();
                              }
                          });
        if (i == opt.tasks / 3) {
            // In the middle of the run, a task that crashes its worker.
            asio::co_spawn(
                ex,
                [&]() -> asio::awaitable<void> {
                    auto [ec, r] =
                        co_await pool.async_submit(torchpool::request("segfault"), tuple);
                    std::printf("\nThe 'segfault' task failed, as intended. Its caller got:\n");
                    std::printf("  error:     %s\n", ec.message().c_str());
                    std::printf("  summary:   %s\n", r.diagnostics.summary.c_str());
                    std::printf("  last log:  %s", r.diagnostics.log_tail.c_str());
                    crash_reported = ec == torchpool::errc::worker_died;
                    std::printf("The other tasks carry on; the pool replaces the worker.\n\n");
                },
                asio::detached);
        }
    }

    co_await all_done.async_wait(tuple);  // cancelled by the last completion
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    const auto s = pool.stats();
    std::printf("\nResults: %d tasks, %d correct, %d wrong, %d failed, in %.2f s (%.0f tasks/s)\n",
                opt.tasks, correct, wrong, failed, seconds, opt.tasks / seconds);
    std::printf("Pool statistics:\n");
    std::printf("  workers started %llu, restarts %llu, unexpected deaths %llu (by signal %llu)\n",
                static_cast<unsigned long long>(s.spawned),
                static_cast<unsigned long long>(s.restarts),
                static_cast<unsigned long long>(s.deaths_by_signal + s.deaths_by_exit),
                static_cast<unsigned long long>(s.deaths_by_signal));
    std::printf("  tasks submitted %llu, succeeded %llu, worker died %llu, failed %llu\n",
                static_cast<unsigned long long>(s.submitted),
                static_cast<unsigned long long>(s.succeeded),
                static_cast<unsigned long long>(s.worker_died),
                static_cast<unsigned long long>(s.task_failed));
    std::printf("  workers now: %zu idle, %zu busy, %zu starting\n", s.workers_idle, s.workers_busy,
                s.workers_starting);

    std::printf("\nShutting down: the workers finish, are asked to exit, and are reaped.\n");
    co_await pool.async_shutdown(tuple);
    std::printf("Done: every worker process has exited and been reaped.\n");
    exit_code = (correct == opt.tasks && wrong == 0 && crash_reported) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    options opt;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            usage(argv[0]);
            return 0;
        }
        if ((arg == "--workers" || arg == "--tasks") && i + 1 < argc) {
            const long value = std::strtol(argv[++i], nullptr, 10);
            if (value <= 0) {
                std::fprintf(stderr, "%s: %s needs a positive number, got '%s'\n", argv[0],
                             arg.c_str(), argv[i]);
                return 64;
            }
            if (arg == "--workers") {
                opt.workers = static_cast<std::size_t>(value);
            } else {
                opt.tasks = static_cast<int>(value);
            }
            continue;
        }
        std::fprintf(stderr, "%s: unknown argument '%s'\n\n", argv[0], arg.c_str());
        usage(argv[0]);
        return 64;
    }

    const auto worker =
        std::filesystem::read_symlink("/proc/self/exe").parent_path() / "torchpool-primes-worker";
    std::printf("torchpool demo: %zu worker processes (%s), %d tasks.\n", opt.workers,
                worker.c_str(), opt.tasks);

    asio::io_context io{1};
    std::size_t ready = 0;
    torchpool::pool pool(
        io.get_executor(),
        torchpool::pool_params{
            .worker = {.executable = worker.string()},
            .workers = opt.workers,
            .queue_limit = static_cast<std::size_t>(opt.tasks) + 64,
            .on_worker_event =
                [&](const torchpool::worker_event& e) {
                    using kind = torchpool::worker_event::kind;
                    if (e.what == kind::ready) {
                        ++ready;
                        if (ready <= opt.workers) {
                            std::printf("  %zu of %zu workers ready\n", ready, opt.workers);
                        } else {
                            std::printf("  replacement %s\n", e.description.c_str());
                        }
                    } else if (e.what == kind::exited &&
                               e.description.find("while stopping") == std::string::npos) {
                        std::printf("  pool event: %s\n", e.description.c_str());
                    }
                },
        });
    pool.async_run(asio::detached);
    int exit_code = 1;
    asio::co_spawn(io, demo(pool, opt, exit_code), [](std::exception_ptr e) {
        if (e) {
            std::rethrow_exception(e);
        }
    });
    io.run();
    return exit_code;
}
