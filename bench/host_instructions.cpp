// The host's side of a no-op task, for instruction counting: one pool with one worker, N
// no-op tasks submitted one at a time (the next when the previous completes), then shutdown.
// Run under `valgrind --tool=callgrind` at two task counts (bench/instructions.sh): the
// difference of the two totals divided by the difference of the counts is the host's
// instruction count per task, free of start-up and shutdown, and unaffected by the load of
// a shared machine.
//
// Usage: torchpool-bench-host-instructions TASKS
#include <torchpool/pool.hpp>

#include <boost/asio/io_context.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

namespace asio = boost::asio;

int main(int argc, char** argv) {
    const long tasks = argc == 2 ? std::atol(argv[1]) : 0;
    if (tasks <= 0) {
        std::fprintf(stderr,
                     "Usage: %s TASKS\n"
                     "Runs TASKS no-op tasks, one outstanding at a time, through a pool of one\n"
                     "worker (torchpool-bench-noop-worker, next to this program), then shuts the\n"
                     "pool down. Meant to be run under valgrind --tool=callgrind by\n"
                     "bench/instructions.sh.\n",
                     argv[0]);
        return 64;
    }
    const auto worker = (std::filesystem::read_symlink("/proc/self/exe").parent_path() /
                         "torchpool-bench-noop-worker")
                            .string();
    asio::io_context io{1};
    torchpool::pool pool(io.get_executor(),
                         {.worker = {.executable = worker}, .workers = 1, .queue_limit = 16});
    pool.async_run([](boost::system::error_code) {});
    const torchpool::request noop("noop");
    long done = 0;
    int status = 0;
    std::function<void()> submit_next = [&] {
        pool.async_submit(noop, [&](boost::system::error_code ec, torchpool::response r) {
            if (ec) {
                std::fprintf(stderr, "task failed: %s\n", r.diagnostics.summary.c_str());
                status = 1;
            }
            if (++done < tasks && status == 0) {
                submit_next();
            } else {
                pool.async_shutdown([](boost::system::error_code) {});
            }
        });
    };
    submit_next();
    io.run();
    std::printf("%ld tasks done\n", done);
    return status;
}
