// torchpool-serve: an inference server over torchpool pools of LibTorch workers, speaking the
// Open Inference Protocol (KServe v2 REST). Everything runs on one io_context thread: HTTP
// sessions, the pools, their workers' channels and exits, and the timers.
#include "http_server.hpp"
#include "model_config.hpp"
#include "oip.hpp"
#include <torchpool/pool.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using namespace torchpool;
using namespace torchpool::serve;

namespace {

struct options {
    std::string host = "127.0.0.1";
    unsigned short port = 8000;
    std::vector<std::string> models;
    std::string worker;
    std::size_t workers = 0;
    std::size_t queue_limit = 1024;
    unsigned timeout_ms = 30'000;
    std::uint64_t soft_memory_mib = 0;
    std::uint64_t hard_memory_mib = 0;
    http_limits limits;
    unsigned read_timeout_ms = 10'000;
    std::size_t max_batch = 32;
    unsigned batch_delay_us = 200;
};

std::filesystem::path own_directory(const char* argv0) {
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    return (ec ? std::filesystem::path(argv0) : self).parent_path();
}

// The stock LibTorch worker: installed beside this program, else the one of its build.
std::string default_worker(const char* argv0) {
    const auto beside = own_directory(argv0) / "torchpool-torch-worker";
    return std::filesystem::exists(beside) ? beside.string() : TORCHPOOL_TORCH_WORKER_PATH;
}

// The default model: installed (share/torchpool/models), else the one of its build.
std::string default_model(const char* argv0) {
    const auto installed =
        own_directory(argv0).parent_path() / "share/torchpool/models/fashion_mnist.pt";
    return std::filesystem::exists(installed) ? installed.string() : TORCHPOOL_DEFAULT_MODEL_PATH;
}

// A request a person can send with curl: the model's own sample (PATH.sample.json beside it),
// else zeros of each input's shape (a batch of 1 where the size is free), written to a
// temporary file.
std::string write_sample_request(const model_config& model) {
    // The model's maker may have left one beside it (the trainer does: a real test image).
    if (auto made = std::filesystem::path(model.path).replace_extension(".sample.json");
        std::filesystem::exists(made)) {
        return made.string();
    }
    std::string json = R"({"id":"try-me","inputs":[)";
    for (std::size_t i = 0; i < model.inputs.size(); ++i) {
        const auto& in = model.inputs[i];
        std::size_t n = 1;
        std::string shape = "[";
        for (std::size_t d = 0; d < in.shape.size(); ++d) {
            const auto size = in.shape[d] < 0 ? 1 : in.shape[d];
            n *= static_cast<std::size_t>(size);
            shape += (d ? "," : "") + std::to_string(size);
        }
        shape += "]";
        std::string data = "[";
        const char* zero = in.type == dtype::boolean ? "false" : "0";
        for (std::size_t e = 0; e < n; ++e) {
            data += (e ? "," : "") + std::string(zero);
        }
        data += "]";
        json += (i ? "," : "") + std::string(R"({"name":")") + in.name + R"(","datatype":")" +
                std::string(oip_datatype(in.type)) + R"(","shape":)" + shape + R"(,"data":)" +
                data + "}";
    }
    json += "]}";
    const auto path = std::filesystem::temp_directory_path() /
                      ("torchpool-serve-" + model.name + "-request.json");
    std::ofstream(path) << json;
    return path.string();
}

// The stock worker's warm-up for a model of one FP32 input: forward on zeros of the input's
// shape for each batch size 1..max_batch, once in the fork server (so shared by every worker),
// before the workers count as ready. TorchScript's executor profiles and optimizes each new
// shape on its first runs (tens of milliseconds each), which requests would otherwise wait.
// Nothing for other models (zeros of the right type and shapes cannot be made for them here).
std::vector<std::string> warmup_args(const model_config& model, std::size_t max_batch) {
    if (model.inputs.size() != 1 || model.inputs[0].type != dtype::float32 ||
        model.inputs[0].shape.empty()) {
        return {};
    }
    std::string shape;
    for (std::size_t d = 0; d < model.inputs[0].shape.size(); ++d) {
        const auto size = model.inputs[0].shape[d];
        if (d > 0 && size < 1) {
            return {};  // a free size past the batch's: no one shape to warm
        }
        if (d > 0) {
            shape += ',';
        }
        shape += std::to_string(d == 0 ? 1 : size);
    }
    return {"--warmup", shape, "--warmup-batches",
            std::to_string(model.inputs[0].shape[0] < 0 ? std::max<std::size_t>(1, max_batch) : 1)};
}

}  // namespace

int main(int argc, char** argv) {
    options opt;
    unsigned drain_timeout_ms = 20'000;
    CLI::App app{
        "torchpool-serve: an inference server for TorchScript models, speaking the Open "
        "Inference Protocol (KServe v2 REST) over HTTP/1.1. Each model is served by a pool of "
        "LibTorch worker processes made by a fork server; a worker that dies fails only the "
        "requests it was running, and is replaced."};
    app.add_option("--host", opt.host, "address to listen on")->capture_default_str();
    app.add_option("--port", opt.port, "port to listen on; 0 picks a free one")
        ->capture_default_str();
    app.add_option("--model", opt.models,
                   "a model to serve, as NAME=PATH of a TorchScript file with its PATH.json "
                   "beside it (repeatable; default: the Fashion-MNIST model as 'fashion')");
    app.add_option("--worker", opt.worker, "the worker program (default: torchpool-torch-worker)");
    app.add_option("--workers", opt.workers, "worker processes per model (default: one per core)");
    app.add_option("--queue-limit", opt.queue_limit,
                   "requests that may wait per model; past it, 503 with Retry-After")
        ->capture_default_str();
    app.add_option("--timeout-ms", opt.timeout_ms,
                   "deadline of a request, queue wait included; past it, 504")
        ->capture_default_str();
    app.add_option("--soft-memory-mib", opt.soft_memory_mib,
                   "a worker over this much memory of its own is replaced after its request");
    app.add_option("--hard-memory-mib", opt.hard_memory_mib,
                   "a worker over this much memory of its own is killed (its request fails)");
    app.add_option("--max-batch", opt.max_batch,
                   "requests of a model are stacked into batches of up to this many rows (1: no "
                   "batching)")
        ->capture_default_str();
    app.add_option("--batch-delay-us", opt.batch_delay_us,
                   "a batch is sent when full, when a worker is free, or this long after its "
                   "oldest request arrived (if no more than one batch waits for each busy "
                   "worker)")
        ->capture_default_str();
    app.add_flag("--fault-injection", opt.limits.fault_injection,
                 "honour parameters.torchpool_fault in requests (crash, exit, hang, leak, delay, "
                 "garbage, fail), to test clients' failure handling; never in production");
    app.add_option("--max-body-bytes", opt.limits.max_body_bytes,
                   "largest request body; past it, 413")
        ->capture_default_str();
    app.add_option("--max-connections", opt.limits.max_connections,
                   "connections served at once; more are answered 503 and closed")
        ->capture_default_str();
    app.add_option("--drain-timeout-ms", drain_timeout_ms,
                   "on SIGTERM, time allowed for requests in flight before they are cut; keep it "
                   "below the orchestrator's grace (Kubernetes: terminationGracePeriodSeconds)")
        ->capture_default_str();
    app.add_option("--read-timeout-ms", opt.read_timeout_ms,
                   "time a client has to send a whole request before it is disconnected")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    if (opt.models.empty()) {
        opt.models.push_back("fashion=" + default_model(argv[0]));
    }
    const bool stock_worker = opt.worker.empty();
    if (stock_worker) {
        opt.worker = default_worker(argv[0]);
    }
    opt.limits.request_timeout = std::chrono::milliseconds(opt.timeout_ms);
    opt.limits.read_timeout = std::chrono::milliseconds(opt.read_timeout_ms);

    asio::io_context io(1);
    std::vector<served_model> models;
    std::size_t ready = 0;
    std::size_t wanted = 0;
    std::function<void()> announce;  // once every worker is ready: where to send requests
    try {
        for (const auto& spec : opt.models) {
            const auto eq = spec.find('=');
            if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) {
                throw std::runtime_error("--model wants NAME=PATH, got '" + spec + "'");
            }
            auto config = load_model_config(spec.substr(0, eq), spec.substr(eq + 1));
            if (!std::filesystem::exists(config.path)) {
                throw std::runtime_error("model '" + config.name + "': " + config.path +
                                         " does not exist");
            }
            // Field by field: GCC 12 at -O2 warns of a default std::function member of a
            // designated-initializer aggregate as maybe uninitialized (a false positive).
            pool_params params;
            params.worker = {.executable = opt.worker,
                             .args = {"--model", config.path},
                             .start = start_mode::fork_server};
            if (stock_worker) {
                for (auto& a : warmup_args(config, opt.max_batch)) {
                    params.worker.args.push_back(std::move(a));
                }
            }
            params.workers = opt.workers > 0
                                 ? opt.workers
                                 : std::max<std::size_t>(1, std::thread::hardware_concurrency());
            params.queue_limit = opt.queue_limit;
            params.memory = {.soft_limit_bytes = opt.soft_memory_mib << 20,
                             .hard_limit_bytes = opt.hard_memory_mib << 20};
            params.on_worker_event = [&, name = config.name](const worker_event& e) {
                if (e.what == worker_event::kind::ready && ready < wanted) {
                    ++ready;
                    std::printf("workers ready: %zu of %zu\n", ready, wanted);
                    if (ready == wanted) {
                        announce();
                    }
                    std::fflush(stdout);
                } else if (e.what != worker_event::kind::started &&
                           e.what != worker_event::kind::ready) {
                    std::fprintf(stderr, "torchpool-serve: model '%s': %s\n", name.c_str(),
                                 e.description.c_str());
                }
            };
            params.faults.enabled = opt.limits.fault_injection;
            wanted += params.workers;
            auto workers = std::make_unique<pool>(io.get_executor(), params);
            auto batches = std::make_unique<batcher>(
                *workers, batcher::params{.method = config.method,
                                          .max_batch = keeps_batch_dimension(config)
                                                           ? std::max<std::size_t>(1, opt.max_batch)
                                                           : 1,
                                          .delay = std::chrono::microseconds(opt.batch_delay_us),
                                          .workers = params.workers,
                                          .timeout = opt.limits.request_timeout});
            models.push_back({std::move(config), std::move(workers), std::move(batches)});
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "torchpool-serve: %s\n", e.what());
        return 2;
    }

    asio::ip::tcp::acceptor acceptor(io);
    try {
        const asio::ip::tcp::endpoint at(asio::ip::make_address(opt.host), opt.port);
        acceptor.open(at.protocol());
        acceptor.set_option(asio::socket_base::reuse_address(true));
        acceptor.bind(at);
        acceptor.listen();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "torchpool-serve: cannot listen on %s:%u: %s\n", opt.host.c_str(),
                     static_cast<unsigned>(opt.port), e.what());
        return 2;
    }
    std::vector<metrics_source> pools;
    for (const auto& m : models) {
        pools.push_back({m.config.name, m.workers.get(),
                         [batches = m.batches.get()] { return batches->waiting(); }});
    }
    server_metrics metrics(std::move(pools));
    for (auto& m : models) {
        m.batches->on_send(
            [&metrics, name = m.config.name](std::size_t rows) { metrics.batch_sent(name, rows); });
    }
    http_server server(acceptor, models, metrics, opt.limits);
    for (auto& m : models) {
        m.workers->async_run(asio::detached);
    }
    const auto port = acceptor.local_endpoint().port();
    announce = [&] {
        const auto& first = models.front().config;
        std::printf("listening on http://%s:%u (models: ", opt.host.c_str(),
                    static_cast<unsigned>(port));
        for (std::size_t i = 0; i < models.size(); ++i) {
            std::printf("%s%s", i ? ", " : "", models[i].config.name.c_str());
        }
        std::printf(")\ntry: curl -s -d @%s http://%s:%u/v2/models/%s/infer\n",
                    write_sample_request(first).c_str(), opt.host.c_str(),
                    static_cast<unsigned>(port), first.name.c_str());
    };
    std::printf("starting %zu workers; requests are accepted on port %u already\n", wanted,
                static_cast<unsigned>(port));
    std::fflush(stdout);

    asio::co_spawn(io, server.run(), asio::detached);
    // The drain, on SIGTERM (or SIGINT): readiness turns 503 and no connection is accepted;
    // idle connections close; requests already sent are answered (waiting batches go at once)
    // and their connections closed; then the pools stop. Past --drain-timeout-ms whatever is
    // left is cut.
    asio::signal_set signals(io, SIGINT, SIGTERM);
    asio::steady_timer drain_limit(io);
    std::size_t pools_running = models.size();
    signals.async_wait([&](boost::system::error_code ec, int signo) {
        if (ec) {
            return;
        }
        std::printf("%s: draining: no new connections; requests in flight are answered\n",
                    signo == SIGTERM ? "SIGTERM" : "SIGINT");
        std::fflush(stdout);
        // Nothing waits in a batch once every connection is done: the flush below, at the
        // drain's start, sent what waited then.
        server.when_drained([&] {
            for (auto& m : models) {
                m.workers->async_shutdown([&](boost::system::error_code) {
                    if (--pools_running == 0) {
                        drain_limit.cancel();
                    }
                });
            }
        });
        server.stop();
        for (auto& m : models) {
            m.batches->flush_all();
        }
        drain_limit.expires_after(std::chrono::milliseconds(drain_timeout_ms));
        drain_limit.async_wait([&](boost::system::error_code timer_ec) {
            if (timer_ec) {
                return;  // drained in time
            }
            std::fprintf(stderr,
                         "torchpool-serve: the drain took longer than --drain-timeout-ms (%u); "
                         "closing what is left\n",
                         drain_timeout_ms);
            server.close_all();
            for (auto& m : models) {
                m.workers->cancel();
            }
        });
    });
    io.run();
    std::printf("stopped\n");
    return 0;
}
