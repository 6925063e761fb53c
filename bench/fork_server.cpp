// How cheap are hundreds of LibTorch workers? Starts N LibTorch workers from the fork server
// and, in the same run, M workers by direct spawn (each loads LibTorch and the model itself);
// waits until every worker has answered one inference, and reports the time that took and
// the memory the pool holds: the sum of PSS over its processes (/proc/PID/smaps_rollup)
// and each worker's private memory.
//
// usage: torchpool-bench-fork-server [FORKED_WORKERS=256] [DIRECT_WORKERS=16 (0: none)]
//                                    [MAX_STARTS=0]
#include "posix/proc.hpp"
#include <torchpool/pool.hpp>

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <sys/resource.h>

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

struct result {
    double seconds = 0;
    double after_server_ready = 0;  // from the fork server's hello to the last answer
    double total_pss_mib = 0;
    double worker_private_mib = 0;  // mean per worker
    double worker_pss_mib = 0;      // mean per worker
    std::size_t answered = 0;
    std::uint64_t open_files_limit = 0;  // the pool's, after it raised it
};

result measure(const std::string& worker, std::size_t n, torchpool::start_mode mode,
               std::size_t starts, std::vector<std::string> env = {}) {
    asio::io_context io{1};
    result r;
    std::set<int> pids;
    std::size_t ready = 0;
    const auto start = std::chrono::steady_clock::now();
    auto server_ready = start;
    torchpool::pool* pool_ptr = nullptr;
    torchpool::tensor image(torchpool::dtype::float32, {1, 1, 28, 28});
    image.data.resize(784 * sizeof(float));
    auto answered = [&](boost::system::error_code ec, torchpool::response resp) {
        if (!ec) {
            ++r.answered;
            pids.insert(resp.worker_pid);
        } else {
            std::fprintf(stderr, "task failed: %s\n", resp.diagnostics.summary.c_str());
        }
        if (r.answered == n) {
            const auto now = std::chrono::steady_clock::now();
            r.seconds = std::chrono::duration<double>(now - start).count();
            r.after_server_ready = std::chrono::duration<double>(now - server_ready).count();
            const auto stats = pool_ptr->stats();
            r.open_files_limit = stats.open_files_limit;
            double worker_private = 0, worker_pss = 0;
            const auto mib = [](std::uint64_t bytes) {
                return static_cast<double>(bytes) / (1 << 20);
            };
            for (int pid : pids) {
                const auto m =
                    torchpool::posix::read_memory(pid).value_or(torchpool::worker_memory{});
                r.total_pss_mib += mib(m.pss_bytes);
                worker_private += mib(m.private_bytes);
                worker_pss += mib(m.pss_bytes);
            }
            if (stats.fork_server_pid > 0) {
                const auto m = torchpool::posix::read_memory(stats.fork_server_pid);
                r.total_pss_mib += mib(m.value_or(torchpool::worker_memory{}).pss_bytes);
            }
            r.worker_private_mib = worker_private / static_cast<double>(pids.size());
            r.worker_pss_mib = worker_pss / static_cast<double>(pids.size());
            pool_ptr->cancel();
        }
    };
    torchpool::pool pool(io.get_executor(),
                         {.worker = {.executable = worker,
                                     .args = {"--warmup", "1,1,28,28"},
                                     .env = std::move(env),
                                     .start = mode},
                          .workers = n,
                          .spawn_timeout = 120s,
                          .load_timeout = 120s,
                          .max_concurrent_starts = starts,
                          .on_worker_event = [&](const torchpool::worker_event& e) {
                              // Each worker gets its one inference as soon as it is ready: the time
                              // measured is until the last one answered.
                              if (e.what == torchpool::worker_event::kind::fork_server_ready) {
                                  server_ready = std::chrono::steady_clock::now();
                              }
                              if (e.what == torchpool::worker_event::kind::ready) {
                                  ++ready;
                                  torchpool::request req("forward", {}, {image});
                                  pool_ptr->async_submit(std::move(req), answered);
                              }
                          }});
    pool_ptr = &pool;
    pool.async_run([](boost::system::error_code) {});
    io.run_for(600s);
    return r;
}

}  // namespace

int main(int argc, char** argv) {
    const std::size_t forked = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 256;
    const std::size_t direct = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 16;
    // pool_params::max_concurrent_starts; 0 = the pool's default (2 x cores, at least 4).
    const std::size_t starts = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 0;
    rlimit files{};
    ::getrlimit(RLIMIT_NOFILE, &files);
    if (files.rlim_cur > 1024) {
        files.rlim_cur = 1024;
        ::setrlimit(RLIMIT_NOFILE, &files);
    }
    const auto worker =
        (std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path() / "apps" /
         "torchpool-torch-worker")
            .string();
    std::printf("LibTorch workers (default Fashion-MNIST model), each answering one inference\n");
    const auto f = measure(worker, forked, torchpool::start_mode::fork_server, starts);
    std::printf(
        "fork server:  %4zu workers answered in %6.2f s (%.2f s after the fork server was "
        "ready); summed PSS %7.1f MiB (%.2f MiB per worker incl. its share; %.2f MiB private per "
        "worker)\n",
        f.answered, f.seconds, f.after_server_ready, f.total_pss_mib,
        f.total_pss_mib / static_cast<double>(forked), f.worker_private_mib);
    std::printf("open files: the soft limit was %llu; the pool raised it to %llu\n",
                static_cast<unsigned long long>(files.rlim_cur),
                static_cast<unsigned long long>(f.open_files_limit));
    // The same without the fork server's helper processes (one fork at a time).
    const auto single = measure(worker, forked, torchpool::start_mode::fork_server, starts,
                                {"TORCHPOOL_FORK_SERVER_HELPERS=0"});
    std::printf(
        "fork server without helpers: %zu workers answered in %.2f s (%.2f s after it was "
        "ready); with helpers / without: %.2fx the time after ready\n",
        single.answered, single.seconds, single.after_server_ready,
        f.after_server_ready / single.after_server_ready);
    if (direct > 0) {  // 0: the fork server alone
        const auto d = measure(worker, direct, torchpool::start_mode::direct, starts);
        std::printf(
            "direct spawn: %4zu workers answered in %6.2f s; summed PSS %7.1f MiB "
            "(%.2f MiB per worker; %.2f MiB private per worker)\n",
            d.answered, d.seconds, d.total_pss_mib, d.total_pss_mib / static_cast<double>(direct),
            d.worker_private_mib);
        const double f_per = f.seconds / static_cast<double>(forked);
        const double d_per = d.seconds / static_cast<double>(direct);
        std::printf(
            "per worker, direct spawn / fork server: start-to-answer time %.1fx, memory "
            "(PSS) %.1fx\n",
            d_per / f_per,
            (d.total_pss_mib / static_cast<double>(direct)) /
                (f.total_pss_mib / static_cast<double>(forked)));
        if (d.answered != direct) {
            return 1;
        }
    }
    // The project's targets on a 2-core machine: 256 workers in 2 s and 1 GiB, 1,024 in 4 s
    // and 1.5 GiB.
    const double target_seconds = forked <= 256 ? 2 : 4;
    const double target_mib = forked <= 256 ? 1024 : 1536;
    std::printf(
        "targets for %zu forked workers: under %.0f s (%s from the start, %s once the fork "
        "server was ready), under %.1f GiB summed PSS (%s)\n",
        forked, target_seconds, f.seconds < target_seconds ? "met" : "NOT met",
        f.after_server_ready < target_seconds ? "met" : "NOT met", target_mib / 1024,
        f.total_pss_mib < target_mib ? "met" : "NOT met");
    return f.answered == forked && single.answered == forked ? 0 : 1;
}
