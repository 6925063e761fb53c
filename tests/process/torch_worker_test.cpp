// The stock LibTorch worker (apps/torch_worker.cpp) under a real pool: results, every kind
// of model error, deaths while a model runs, and many workers from the fork server.
#include "../support/process_support.hpp"
#include "torch_reference.hpp"
#include <torchpool/error.hpp>
#include <torchpool/pool.hpp>

#include <boost/asio/detached.hpp>

#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include <signal.h>
#include <unistd.h>

using namespace torchpool;
using namespace torchpool::test;

namespace {

worker_params libtorch_worker(std::vector<std::string> args = {},
                              start_mode mode = start_mode::fork_server) {
    return {.executable = TORCHPOOL_TORCH_WORKER, .args = std::move(args), .start = mode};
}

request infer(std::string method, std::vector<tensor> inputs) {
    return request(std::move(method), {}, std::move(inputs));
}

// A model made here, with a method that runs for as long as asked.
std::string spinning_model_path() {
    static const std::string path = [] {
        const auto file = std::filesystem::temp_directory_path() /
                          ("torchpool-spin-" + std::to_string(::getpid()) + ".pt");
        write_spinning_model(file.string());
        return file.string();
    }();
    return path;
}

tensor scalar_int64(std::int64_t v) {
    tensor t(dtype::int64, {});
    t.data.assign(reinterpret_cast<const char*>(&v), sizeof v);
    return t;
}

}  // namespace

TEST_CASE("the LibTorch worker's results equal the model's forward run in this process",
          "[process][torch]") {
    const tensor images = test::fashion_test_images(32);
    const tensor expected = run_in_process(TORCHPOOL_DEFAULT_MODEL, "forward", images);
    for (auto mode : {start_mode::direct, start_mode::fork_server}) {
        run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
            pool p(io.get_executor(), {.worker = libtorch_worker({}, mode), .workers = 2});
            p.async_run(asio::detached);
            auto request1 = infer("forward", {images});
            auto [ec, r] = co_await p.async_submit(std::move(request1), tuple_awaitable);
            REQUIRE(!ec);
            REQUIRE(r.tensors.size() == 1);
            CHECK(r.tensors[0].type == dtype::float32);
            CHECK(r.tensors[0].shape == (std::vector<std::int64_t>{32, 10}));
            CHECK(r.tensors[0].data == expected.data);  // bit for bit
            // Another method of the same model, by name.
            auto request2 = infer("predict", {images});
            auto [ec2, classes] = co_await p.async_submit(std::move(request2), tuple_awaitable);
            REQUIRE(!ec2);
            CHECK(classes.tensors.at(0).type == dtype::int64);
            CHECK(classes.tensors.at(0).shape == std::vector<std::int64_t>{32});
            co_await p.async_shutdown(asio::use_awaitable);
        });
    }
    CHECK(child_pids().empty());
}

TEST_CASE("model errors fail the task with a message that names the problem: the worker stays",
          "[process][torch]") {
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), {.worker = libtorch_worker(), .workers = 1});
        p.async_run(asio::detached);
        // Wrong shape: 100 values per image cannot be reshaped to 784.
        tensor wrong_shape(dtype::float32, {1, 100});
        wrong_shape.data.resize(100 * sizeof(float));
        auto request3 = infer("forward", {wrong_shape});
        auto [ec1, r1] = co_await p.async_submit(std::move(request3), tuple_awaitable);
        CHECK(ec1 == errc::task_failed);
        CHECK(r1.diagnostics.error_type == "torchpool::torch_worker::model_error");
        CHECK_THAT(r1.diagnostics.error_message,
                   Catch::StartsWith("method 'forward' failed on float32[1,100]: RuntimeError: "
                                     "shape '[1, 784]' is invalid for input of size 100"));

        // Wrong dtype: booleans, which the model's arithmetic does not take.
        tensor wrong_type(dtype::boolean, {1, 784});
        wrong_type.data.resize(784);
        auto request4 = infer("forward", {wrong_type});
        auto [ec2, r2] = co_await p.async_submit(std::move(request4), tuple_awaitable);
        CHECK(ec2 == errc::task_failed);
        CHECK_THAT(r2.diagnostics.error_message,
                   Catch::Contains("bool[1,784]") && Catch::Contains("bool tensor"));

        // Wrong number of inputs.
        auto request5 = infer("forward", {});
        auto [ec3, r3] = co_await p.async_submit(std::move(request5), tuple_awaitable);
        CHECK(ec3 == errc::task_failed);
        CHECK_THAT(r3.diagnostics.error_message,
                   Catch::Contains("takes 1 tensor(s) (images); the request has 0"));

        // A method the model does not have.
        auto request6 = infer("backward", {test::fashion_test_images(1)});
        auto [ec4, r4] = co_await p.async_submit(std::move(request6), tuple_awaitable);
        CHECK(ec4 == errc::task_failed);
        CHECK_THAT(r4.diagnostics.error_message, Catch::Contains("'backward'") &&
                                                     Catch::Contains("forward") &&
                                                     Catch::Contains("predict"));

        // The same worker still serves.
        auto request7 = infer("predict", {test::fashion_test_images(4)});
        auto [ec5, r5] = co_await p.async_submit(std::move(request7), tuple_awaitable);
        CHECK(!ec5);
        CHECK(r5.worker_pid == r1.worker_pid);
        CHECK(p.stats().spawned == 1);
        co_await p.async_shutdown(asio::use_awaitable);
    });
}

TEST_CASE("a model file that is missing or will not load is a start failure that says so",
          "[process][torch]") {
    const auto garbage = std::filesystem::temp_directory_path() /
                         ("torchpool-garbage-" + std::to_string(::getpid()) + ".pt");
    std::ofstream(garbage) << "this is not a TorchScript file";
    struct expectation {
        std::string model;
        std::string words;
    };
    for (const auto& [model, words] :
         {expectation{"/nonexistent/model.pt", "does not exist"},
          expectation{garbage.string(), "cannot load the TorchScript model"}}) {
        for (auto mode : {start_mode::direct, start_mode::fork_server}) {
            run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
                pool p(io.get_executor(), {.worker = libtorch_worker({"--model", model}, mode),
                                           .workers = 1,
                                           .restart_backoff = {.initial = 1ms, .max = 5ms}});
                p.async_run(asio::detached);
                auto request8 = infer("forward", {test::fashion_test_images(1)});
                auto [ec, r] = co_await p.async_submit(std::move(request8), tuple_awaitable);
                CHECK(ec == errc::spawn_failed);
                CHECK_THAT(r.diagnostics.summary, Catch::Contains(words));
                p.cancel();
            });
        }
    }
    std::filesystem::remove(garbage);
    CHECK(child_pids().empty());
}

TEST_CASE("the fork server warms the model on the shape given, or on each batch size asked",
          "[process][torch]") {
    // A shape the model cannot take fails the fork server's own warm-up (before any fork): as
    // given (first size 4), or counted from 1 up to --warmup-batches. The model's error names
    // the batch size it was run with.
    struct expectation {
        std::vector<std::string> args;
        std::string words;
    };
    for (const auto& [warmup, words] :
         {expectation{{"--warmup", "4,3"}, "shape '[4, 784]' is invalid"},
          expectation{{"--warmup", "1,3", "--warmup-batches", "3"},
                      "shape '[1, 784]' is invalid"}}) {
        run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
            pool p(io.get_executor(), {.worker = libtorch_worker(warmup),
                                       .workers = 1,
                                       .restart_backoff = {.initial = 1ms, .max = 5ms}});
            p.async_run(asio::detached);
            auto one = infer("forward", {test::fashion_test_images(1)});  // not in co_await: GCC 12
            auto [ec, r] = co_await p.async_submit(std::move(one), tuple_awaitable);
            CHECK(ec == errc::spawn_failed);
            CHECK_THAT(r.diagnostics.summary, Catch::Contains("the fork server") &&
                                                  Catch::Contains("before it was ready") &&
                                                  Catch::Contains(words));
            CHECK_FALSE(p.stats().fork_server_ready);
            p.cancel();
        });
    }
    // Every batch size up to 8 on the model's own shape: the workers start and answer.
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(),
               {.worker = libtorch_worker({"--warmup", "1,1,28,28", "--warmup-batches", "8"}),
                .workers = 2});
        p.async_run(asio::detached);
        auto three = infer("forward", {test::fashion_test_images(3)});
        auto [ec, r] = co_await p.async_submit(std::move(three), tuple_awaitable);
        CHECK(!ec);
        REQUIRE(r.tensors.size() == 1);
        CHECK(r.tensors[0].shape == std::vector<std::int64_t>{3, 10});
        co_await p.async_shutdown(asio::use_awaitable);
    });
    CHECK(child_pids().empty());
}

TEST_CASE("asking for a CUDA device on this CPU-only LibTorch fails clearly, and only that pool",
          "[process][torch]") {
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        pool gpu(io.get_executor(), {.worker = libtorch_worker({"--device", "cuda:0"}),
                                     .workers = 1,
                                     .restart_backoff = {.initial = 1ms, .max = 5ms}});
        pool cpu(io.get_executor(),
                 {.worker = libtorch_worker({"--device", "round-robin"}), .workers = 1});
        gpu.async_run(asio::detached);
        cpu.async_run(asio::detached);
        auto request9 = infer("forward", {test::fashion_test_images(1)});
        auto [ec, r] = co_await gpu.async_submit(std::move(request9), tuple_awaitable);
        CHECK(ec == errc::spawn_failed);
        CHECK_THAT(r.diagnostics.summary,
                   Catch::Contains("device 'cuda:0'") && Catch::Contains("CUDA is not available"));
        CHECK(gpu.stats().fork_server_ready);  // the server is fine; only the device is not
        // round-robin over no GPU is the CPU; this pool answers.
        auto request10 = infer("predict", {test::fashion_test_images(2)});
        auto [ec2, r2] = co_await cpu.async_submit(std::move(request10), tuple_awaitable);
        CHECK(!ec2);
        gpu.cancel();
        co_await cpu.async_shutdown(asio::use_awaitable);
    });
    CHECK(child_pids().empty());
}

TEST_CASE("a LibTorch worker killed while it runs a model fails that task only",
          "[process][torch]") {
    const std::string model = spinning_model_path();
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        notifier changed(io.get_executor());
        std::vector<int> ready_pids;
        pool p(io.get_executor(), {.worker = libtorch_worker({"--model", model}),
                                   .workers = 1,
                                   .on_worker_event = [&](const worker_event& e) {
                                       if (e.what == worker_event::kind::ready) {
                                           ready_pids.push_back(e.pid);
                                       }
                                       changed.notify();
                                   }});
        p.async_run(asio::detached);
        co_await changed.until([&] { return ready_pids.size() == 1; });
        tensor x(dtype::float32, {4}, std::string(16, '\0'));
        bool done = false;
        boost::system::error_code spin_error;
        response spun;
        p.async_submit(infer("spin", {x, scalar_int64(2'000'000'000)}),
                       [&](boost::system::error_code ec, response r) {
                           spin_error = ec;
                           spun = std::move(r);
                           done = true;
                           changed.notify();
                       });
        // The task is on its way to (or running in) the only worker: kill it.
        co_await asio::post(io, asio::use_awaitable);
        REQUIRE(::kill(ready_pids[0], SIGKILL) == 0);
        co_await changed.until([&] { return done; });
        CHECK(spin_error == errc::worker_died);
        CHECK(spun.diagnostics.signal == SIGKILL);
        CHECK_THAT(spun.diagnostics.summary, Catch::Contains("'spin'"));
        // Replaced, from the fork server, and serving.
        auto request11 = infer("forward", {x});
        auto [ec, r] = co_await p.async_submit(std::move(request11), tuple_awaitable);
        CHECK(!ec);
        CHECK(r.worker_pid != ready_pids[0]);
        co_await p.async_shutdown(asio::use_awaitable);
    });
    CHECK(child_pids().empty());
}

TEST_CASE(
    "fault injection crashes the stock LibTorch worker: an idempotent request succeeds "
    "on its replacement",
    "[process][torch]") {
    auto params = pool_params{.worker = libtorch_worker(), .workers = 1};
    params.faults.enabled = true;
    params.faults.choose = [](const fault_target& t) {
        return t.method == "forward" && t.attempt == 1 ? fault::crash(SIGSEGV) : fault{};
    };
    with_pool(params, [](pool& p) -> asio::awaitable<void> {
        auto req = infer("forward", {test::fashion_test_images(2)});
        auto [ec, r] = co_await p.async_submit(std::move(req).with_retries(1), tuple_awaitable);
        CHECK(!ec);
        REQUIRE(r.attempts.size() == 2);
        CHECK(r.attempts[0].error == errc::worker_died);
        CHECK_THAT(r.attempts[0].summary, Catch::Contains("SIGSEGV"));
        REQUIRE(r.tensors.size() == 1);
        CHECK(r.tensors[0].shape == std::vector<std::int64_t>{2, 10});
    });
}

TEST_CASE("64 LibTorch workers from the fork server all answer", "[process][torch][scale]") {
    run_coroutine(
        [&](asio::io_context& io) -> asio::awaitable<void> {
            notifier changed(io.get_executor());
            int ready = 0;
            pool p(io.get_executor(), {.worker = libtorch_worker(),
                                       .workers = 64,
                                       .on_worker_event = [&](const worker_event& e) {
                                           ready += e.what == worker_event::kind::ready;
                                           changed.notify();
                                       }});
            p.async_run(asio::detached);
            co_await changed.until([&] { return ready == 64; }, 120'000ms);
            std::set<int> pids;
            // Submitted together to 64 idle workers: one task each.
            int finished = 0;
            for (int i = 0; i < 64; ++i) {
                p.async_submit(infer("predict", {test::fashion_test_images(1)}),
                               [&](boost::system::error_code ec, response r) {
                                   CHECK(!ec);
                                   pids.insert(r.worker_pid);
                                   ++finished;
                                   changed.notify();
                               });
            }
            co_await changed.until([&] { return finished == 64; }, 120'000ms);
            CHECK(pids.size() == 64);
            const auto s = p.stats();
            CHECK(s.spawned == 64);
            CHECK(s.failed_starts == 0);
            CHECK(s.fork_server_starts == 1);
            co_await p.async_shutdown(asio::use_awaitable);
        },
        180s);
    CHECK(child_pids().empty());
}
