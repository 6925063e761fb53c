// torchpool-demo: LibTorch workers started from a fork server classify the Fashion-MNIST
// test images with the default model; one worker is killed on purpose while it works, to
// show what the caller learns and how the pool carries on. This program never loads
// LibTorch: only its workers do.
#include "fashion_mnist.hpp"
#include <torchpool/error.hpp>
#include <torchpool/pool.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <signal.h>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using boost::system::error_code;

namespace {

struct options {
    std::size_t workers = 32;
    std::size_t batch = 50;
    std::string model = TORCHPOOL_DEFAULT_MODEL_PATH;
    std::string data = torchpool::apps::default_fashion_mnist_dir;
    std::string device = "cpu";
    bool direct = false;
};

void usage(std::FILE* to) {
    std::fprintf(
        to,
        "usage: torchpool-demo [--workers N] [--batch N] [--model PATH] [--data DIR]\n"
        "                      [--device DEVICE] [--direct]\n\n"
        "Starts a torchpool pool of LibTorch worker processes from a fork server (the model\n"
        "is loaded once and shared by all of them), classifies the 10,000 Fashion-MNIST test\n"
        "images through it, kills one worker on purpose while it works, and prints the\n"
        "accuracy, the throughput, and what the pool told the caller about the death.\n\n"
        "  --workers N     worker processes (default 32)\n"
        "  --batch N       images per task (default 50)\n"
        "  --model PATH    TorchScript model (default: the one trained at build time,\n"
        "                  %s)\n"
        "  --data DIR      Fashion-MNIST files (default %s)\n"
        "  --device D      cpu (default), cuda:N or round-robin\n"
        "  --direct        start each worker as its own process instead of forking them\n",
        TORCHPOOL_DEFAULT_MODEL_PATH, torchpool::apps::default_fashion_mnist_dir);
}

bool parse(int argc, char** argv, options& o) {
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            usage(stdout);
            std::exit(0);
        }
        if (arg == "--direct") {
            o.direct = true;
            continue;
        }
        if (i + 1 >= argc) {
            std::fprintf(stderr, "torchpool-demo: unknown option or missing value: %s\n\n",
                         arg.c_str());
            return false;
        }
        const std::string value = argv[++i];
        if (arg == "--workers" || arg == "--batch") {
            char* end = nullptr;
            const unsigned long n = std::strtoul(value.c_str(), &end, 10);
            if (*end != '\0' || n == 0 || n > 4096) {
                std::fprintf(stderr,
                             "torchpool-demo: %s wants a number from 1 to 4096, not '%s'\n\n",
                             arg.c_str(), value.c_str());
                return false;
            }
            (arg == "--workers" ? o.workers : o.batch) = n;
        } else if (arg == "--model") {
            o.model = value;
        } else if (arg == "--data") {
            o.data = value;
        } else if (arg == "--device") {
            o.device = value;
        } else {
            std::fprintf(stderr, "torchpool-demo: unknown option '%s'\n\n", arg.c_str());
            return false;
        }
    }
    return true;
}

// Images [first, first + count) as float32 [count, 1, 28, 28] in [0, 1].
torchpool::tensor images_tensor(const torchpool::apps::labelled_images& set, std::size_t first,
                                std::size_t count) {
    torchpool::tensor t(torchpool::dtype::float32, {static_cast<std::int64_t>(count), 1, 28, 28});
    t.data.resize(count * torchpool::apps::image_pixels * sizeof(float));
    auto* out = reinterpret_cast<float*>(t.data.data());
    const auto* in = set.pixels.data() + first * torchpool::apps::image_pixels;
    for (std::size_t i = 0; i < count * torchpool::apps::image_pixels; ++i) {
        out[i] = static_cast<float>(in[i]) / 255.0f;
    }
    return t;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

struct run_state {
    std::size_t ready = 0;
    std::size_t correct = 0;
    std::size_t classified = 0;
    std::size_t batches_done = 0;  // answered, or failed after a retry
    std::size_t unexpected_failures = 0;
    std::string death;  // what the caller of the killed worker's task was told
    int victim = 0;
    int retried_on = 0;
    int replacement = 0;  // the worker started after the victim died
    bool shutting_down = false;
};

// Waits until `done()` holds; `wake` is cancelled by whatever changes it.
asio::awaitable<bool> wait_until(asio::steady_timer& wake, std::function<bool()> done,
                                 std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
        if (std::chrono::steady_clock::now() >= deadline) {
            co_return false;
        }
        wake.expires_at(deadline);
        co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    co_return true;
}

asio::awaitable<int> demo(torchpool::pool& pool, asio::steady_timer& wake, run_state& st,
                          const options& opt, const torchpool::apps::labelled_images& test) {
    const auto start = std::chrono::steady_clock::now();
    if (!co_await wait_until(
            wake, [&] { return st.ready == opt.workers; }, 120s)) {
        std::printf("not every worker became ready within 2 minutes; see the messages above\n");
        co_return 1;
    }
    std::printf("workers ready: %zu/%zu, %.2f s after the start\n", st.ready, opt.workers,
                seconds_since(start));

    const std::size_t batches = (test.count + opt.batch - 1) / opt.batch;
    std::function<void(std::size_t, bool)> submit = [&](std::size_t b, bool retry) {
        const std::size_t first = b * opt.batch;
        const std::size_t count = std::min(opt.batch, test.count - first);
        torchpool::request req("predict", {}, {images_tensor(test, first, count)});
        pool.async_submit(std::move(req), [&, b, first, count, retry](error_code ec,
                                                                      torchpool::response r) {
            if (ec) {
                if (ec == torchpool::errc::worker_died && st.death.empty()) {
                    st.death = r.diagnostics.summary;
                } else {
                    ++st.unexpected_failures;
                    std::printf("task %zu failed: %s: %s\n", b, ec.message().c_str(),
                                r.diagnostics.summary.c_str());
                }
                if (!retry) {
                    submit(b, true);  // classify that batch again, on another worker
                    return;
                }
            } else {
                const auto* classes =
                    reinterpret_cast<const std::int64_t*>(r.tensors.at(0).data.data());
                for (std::size_t i = 0; i < count; ++i) {
                    st.correct += static_cast<std::size_t>(classes[i]) == test.labels[first + i];
                }
                st.classified += count;
                if (b == 0 && !retry) {
                    st.victim = r.worker_pid;
                }
                if (retry) {
                    st.retried_on = r.worker_pid;
                }
            }
            ++st.batches_done;
            wake.cancel();
        });
    };

    const auto classify_start = std::chrono::steady_clock::now();
    // The first batch alone: its worker, idle again, gets one of the next tasks at once,
    // and is killed while it works on it.
    submit(0, false);
    co_await wait_until(
        wake, [&] { return st.batches_done == 1; }, 60s);
    for (std::size_t b = 1; b < batches; ++b) {
        submit(b, false);
    }
    std::printf("classifying %zu images in %zu tasks of up to %zu images...\n", test.count, batches,
                opt.batch);
    ::kill(st.victim, SIGKILL);  // a demonstration; a real application never does this
    if (!co_await wait_until(
            wake, [&] { return st.batches_done == batches; }, 300s)) {
        std::printf("the tasks did not finish within 5 minutes\n");
        co_return 1;
    }
    const double took = seconds_since(classify_start);
    // The replacement comes after the restart backoff; wait for it, to show it.
    co_await wait_until(
        wake, [&] { return st.replacement != 0; }, 10s);
    const double accuracy = static_cast<double>(st.correct) / static_cast<double>(test.count);
    std::printf("\naccuracy: %.2f%% (%zu of %zu test images classified correctly)\n",
                100 * accuracy, st.correct, test.count);
    std::printf("throughput: %.0f images/s, %.0f tasks/s, over %zu workers\n",
                static_cast<double>(st.classified) / took, static_cast<double>(batches) / took,
                opt.workers);
    std::printf(
        "\none worker was killed on purpose (SIGKILL to pid %d) while it classified "
        "images;\nits caller was told:\n  %s\nthe batch was sent again and answered by "
        "worker %d; the pool replaced the dead worker with a new %s, worker %d.\n",
        st.victim, st.death.empty() ? "(nothing: it had finished first)" : st.death.c_str(),
        st.retried_on, opt.direct ? "process" : "fork", st.replacement);
    const auto s = pool.stats();
    std::printf(
        "\npool: %zu workers (%s), %u LibTorch thread(s) each; %llu processes started, "
        "%llu unexpected deaths; fork server pid %d\n",
        opt.workers, opt.direct ? "direct spawn" : "forked from one fork server",
        s.intra_op_threads, static_cast<unsigned long long>(s.spawned),
        static_cast<unsigned long long>(s.deaths_by_signal + s.deaths_by_exit), s.fork_server_pid);
    st.shutting_down = true;
    co_await pool.async_shutdown(asio::use_awaitable);
    // The demo is also an end-to-end test (tests/CMakeLists.txt): everything it shows must
    // have happened.
    const bool shown = !st.death.empty() && st.replacement != 0;
    co_return accuracy >= 0.87 && st.unexpected_failures == 0 && st.classified == test.count&& shown
        ? 0
        : 1;
}

}  // namespace

int main(int argc, char** argv) {
    options opt;
    if (!parse(argc, argv, opt)) {
        usage(stderr);
        return 64;
    }
    torchpool::apps::labelled_images test;
    try {
        test = torchpool::apps::read_fashion_mnist(opt.data, torchpool::apps::split::test);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "torchpool-demo: %s\n", e.what());
        return 1;
    }
    const auto worker =
        std::filesystem::read_symlink("/proc/self/exe").parent_path() / "torchpool-torch-worker";
    asio::io_context io{1};
    asio::steady_timer wake(io);
    run_state st;
    std::printf("starting %zu LibTorch workers (%s) with model %s\n", opt.workers,
                opt.direct ? "each its own process" : "forked from one fork server",
                opt.model.c_str());
    torchpool::pool pool(
        io.get_executor(),
        {.worker = {.executable = worker.string(),
                    .args = {"--model", opt.model, "--device", opt.device, "--warmup", "1,1,28,28"},
                    .start = opt.direct ? torchpool::start_mode::direct
                                        : torchpool::start_mode::fork_server},
         .workers = opt.workers,
         .queue_limit = 100'000,
         .load_timeout = 60s,
         .on_worker_event = [&](const torchpool::worker_event& e) {
             using kind = torchpool::worker_event::kind;
             if (e.what == kind::ready && st.ready >= opt.workers) {
                 st.replacement = e.pid;
                 wake.cancel();
             } else if (e.what == kind::ready) {
                 ++st.ready;
                 const std::size_t step = std::max<std::size_t>(1, opt.workers / 8);
                 if (st.ready % step == 0 && st.ready < opt.workers) {
                     std::printf("workers ready: %zu/%zu\n", st.ready, opt.workers);
                     std::fflush(stdout);
                 }
                 wake.cancel();
             } else if (!st.shutting_down &&
                        (e.what == kind::fork_server_ready || e.what == kind::fork_server_exited ||
                         (e.what == kind::exited && e.pid != st.victim))) {
                 std::printf("%s\n", e.description.c_str());
             }
         }});
    int exit_code = 1;
    pool.async_run([](error_code) {});
    asio::co_spawn(io, demo(pool, wake, st, opt, test),
                   [&](std::exception_ptr e, int code) { exit_code = e ? 1 : code; });
    io.run();
    return exit_code;
}
