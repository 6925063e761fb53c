// The host's side of a no-op task, for instruction counting: one pool with one worker, N
// no-op tasks submitted one at a time (the next when the previous completes), then shutdown.
// Run under `valgrind --tool=callgrind` at two task counts (bench/instructions.sh): the
// difference of the two totals divided by the difference of the counts is the host's
// instruction count per task, free of start-up and shutdown, and unaffected by the load of
// a shared machine.
//
// With BYTES, each task carries a float32 tensor of that size, allocated once in the pool's
// input memory (pool::allocate) and submitted again and again ("sink": the worker reads it
// and answers with nothing): the host's cost per task should not depend on the size. With
// `own` after BYTES, the tensor is the caller's own bytes instead (tensor::data), copied with
// the request for each task as a caller would: the inline path below inline_below.
//
// Usage: torchpool-bench-host-instructions TASKS [BYTES [own]]
#include <torchpool/pool.hpp>

#include <boost/asio/io_context.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace asio = boost::asio;

int main(int argc, char** argv) {
    const long tasks = argc >= 2 ? std::atol(argv[1]) : 0;
    const long bytes = argc >= 3 ? std::atol(argv[2]) : 0;
    const bool own = argc == 4 && std::strcmp(argv[3], "own") == 0;
    if (tasks <= 0 || argc > 4 || (argc == 4 && !own) || bytes < 0 || bytes % 4 != 0) {
        std::fprintf(stderr,
                     "Usage: %s TASKS [BYTES [own]]\n"
                     "Runs TASKS no-op tasks, one outstanding at a time, through a pool of one\n"
                     "worker (torchpool-bench-noop-worker, next to this program), then shuts the\n"
                     "pool down. With BYTES (a multiple of 4), each task carries a float32\n"
                     "tensor of that size from pool::allocate, which the worker reads; with\n"
                     "own, the caller's own bytes instead (tensor::data). Meant to\n"
                     "be run under valgrind --tool=callgrind by bench/instructions.sh.\n",
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
    torchpool::request noop("noop");
    if (bytes > 0 && own) {
        std::vector<torchpool::tensor> tensors{
            torchpool::tensor(torchpool::dtype::float32, {bytes / 4},
                              std::string(static_cast<std::size_t>(bytes), '\1'))};
        noop = torchpool::request("sink", {}, std::move(tensors));
    } else if (bytes > 0) {
        // Allocated and filled once: the caller's own work stays out of the count.
        torchpool::tensor t = pool.allocate(torchpool::dtype::float32, {bytes / 4});
        std::memset(t.writable_bytes().data(), 1, t.writable_bytes().size());
        std::vector<torchpool::tensor> tensors{std::move(t)};
        noop = torchpool::request("sink", {}, std::move(tensors));
    }
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
