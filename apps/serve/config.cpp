#include "config.hpp"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <filesystem>

namespace torchpool::serve {

namespace {

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

// A number above 0, or of 0 or more with `zero_too` (CLI11's own checks word their range with
// 300-digit numbers).
CLI::Validator number_check(bool zero_too) {
    return CLI::Validator(
        [zero_too](std::string& text) -> std::string {
            double v = -1;
            const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
            if (ec != std::errc{} || end != text.data() + text.size() || v < 0 ||
                (v == 0 && !zero_too)) {
                return std::string("must be a number ") + (zero_too ? "of 0 or more" : "above 0") +
                       ", not '" + text + "'";
            }
            return {};
        },
        zero_too ? "0 OR MORE" : "ABOVE 0");
}

void add_model_options(CLI::App& app, server_options& opt) {
    app.add_option("--model", opt.models,
                   "a model to serve, as NAME=PATH of a TorchScript file with its PATH.json "
                   "beside it (repeatable; default: the Fashion-MNIST model as 'fashion')");
    app.add_option("--worker", opt.worker, "the worker program (default: torchpool-torch-worker)");
    app.add_option("--workers", opt.workers, "worker processes per model (default: one per core)");
    app.add_option("--queue-limit", opt.queue_limit,
                   "requests that may wait per model; past it, 503 with Retry-After")
        ->capture_default_str();
    app.add_option("--soft-memory-mib", opt.soft_memory_mib,
                   "a worker over this much memory of its own is replaced after its request");
    app.add_option("--hard-memory-mib", opt.hard_memory_mib,
                   "a worker over this much memory of its own is killed (its request fails)");
    app.add_option("--max-batch", opt.max_batch,
                   "requests of a model are stacked into batches of up to this many rows (1: no "
                   "batching)")
        ->capture_default_str();
    app.add_flag("--allow-shared-memory", opt.limits.shared_memory,
                 "let clients on this host register POSIX shared-memory regions and send and "
                 "receive tensors through them (Triton's system shared-memory extension, "
                 "/v2/systemsharedmemory); off by default, since a client could then read and "
                 "write any shared-memory object this server can open");
    app.add_flag("--fault-injection", opt.limits.fault_injection,
                 "honour parameters.torchpool_fault in requests (crash, exit, hang, leak, delay, "
                 "garbage, fail), to test clients' failure handling; never in production");
}

// An option in milliseconds (or microseconds) for a std::chrono duration: above 0, or 0 too
// where none has a meaning of its own (`zero_too`).
template <class Duration>
void add_duration(CLI::App& app, const std::string& name, Duration& d, const std::string& help,
                  bool zero_too = false) {
    app.add_option_function<std::int64_t>(
           name, [&d](std::int64_t v) { d = Duration(v); }, help)
        ->check(number_check(zero_too))
        ->default_str(std::to_string(d.count()));
}

// An option that must be a number above 0.
template <class Number>
void add_positive(CLI::App& app, const std::string& name, Number& n, const std::string& help) {
    app.add_option(name, n, help)->check(number_check(false))->capture_default_str();
}

void add_http_options(CLI::App& app, server_options& opt) {
    auto& limits = opt.limits;
    app.add_option("--host", opt.host, "address to listen on")->capture_default_str();
    app.add_option("--port", opt.port, "port to listen on; 0 picks a free one")
        ->capture_default_str();
    app.add_option("--max-body-bytes", limits.max_body_bytes, "largest request body; past it, 413")
        ->capture_default_str();
    add_positive(app, "--max-connections", limits.max_connections,
                 "connections served at once; near it, the connections that have waited "
                 "longest for a request are closed; past it, a new one is answered 503");
    add_duration(app, "--header-timeout-ms", limits.header_timeout,
                 "time a client has to send a request's head (line and fields) from its first "
                 "byte, or from connecting");
    add_duration(app, "--idle-timeout-ms", limits.idle_timeout,
                 "time a keep-alive connection may wait for its next request");
    add_positive(app, "--min-bytes-per-second", limits.min_bytes_per_second,
                 "slowest pace, after --header-timeout-ms, at which a client may send a body "
                 "or read a response before it is disconnected");
    add_duration(app, "--timeout-ms", limits.request_timeout,
                 "deadline of a request, queue wait included; past it, 504");
    app.add_option("--http-threads", opt.http_threads,
                   "threads that read requests, parse them and write responses, beside the one "
                   "that supervises the pools and forms batches; 0: that thread does it all "
                   "(default: the cores the workers leave free, at most 8)")
        ->check(CLI::Range(0, 64));
}

}  // namespace

std::size_t http_threads_for(std::size_t workers, std::size_t cores) {
    return cores > workers ? std::min<std::size_t>(cores - workers, 8) : 0;
}

std::variant<server_options, int> parse_options(int argc, char** argv) {
    server_options opt;
    CLI::App app{
        "torchpool-serve: an inference server for TorchScript models, speaking the Open "
        "Inference Protocol (KServe v2 REST) over HTTP/1.1. Each model is served by a pool of "
        "LibTorch worker processes made by a fork server; a worker that dies fails only the "
        "requests it was running, and is replaced."};
    add_model_options(app, opt);
    add_http_options(app, opt);
    add_duration(app, "--batch-delay-us", opt.batch_delay,
                 "a batch is sent when full, when a worker is free, or this long after its "
                 "oldest request arrived (if no more than one batch waits for each busy "
                 "worker)",
                 true);
    add_duration(app, "--drain-timeout-ms", opt.drain_timeout,
                 "on SIGTERM, time allowed for requests in flight before they are cut; keep it "
                 "below the orchestrator's grace (Kubernetes: terminationGracePeriodSeconds)",
                 true);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    if (opt.models.empty()) {
        opt.models.push_back("fashion=" + default_model(argv[0]));
    }
    opt.stock_worker = opt.worker.empty();
    if (opt.stock_worker) {
        opt.worker = default_worker(argv[0]);
    }
    return opt;
}

}  // namespace torchpool::serve
