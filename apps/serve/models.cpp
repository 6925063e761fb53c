#include "models.hpp"

#include "oip.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <thread>

namespace torchpool::serve {

namespace {

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

model_config config_of(const std::string& spec) {
    const auto eq = spec.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) {
        throw std::runtime_error("--model wants NAME=PATH, got '" + spec + "'");
    }
    auto config = load_model_config(spec.substr(0, eq), spec.substr(eq + 1));
    if (!std::filesystem::exists(config.path)) {
        throw std::runtime_error("model '" + config.name + "': " + config.path + " does not exist");
    }
    return config;
}

// Counts workers ready until all are, once.
struct readiness {
    std::size_t ready = 0;
    std::size_t wanted = 0;
    std::function<void()> all_ready;

    void one_ready() {
        if (ready == wanted) {
            return;  // a replacement, after the start
        }
        ++ready;
        std::printf("workers ready: %zu of %zu\n", ready, wanted);
        std::fflush(stdout);
        if (ready == wanted && all_ready) {
            all_ready();
        }
    }
};

pool_params params_of(const model_config& config, const server_options& opt,
                      const std::shared_ptr<readiness>& counter) {
    // Field by field: GCC 12 at -O2 warns of a default std::function member of a
    // designated-initializer aggregate as maybe uninitialized (a false positive).
    pool_params params;
    params.worker = {.executable = opt.worker,
                     .args = {"--model", config.path},
                     .start = start_mode::fork_server};
    if (opt.stock_worker) {
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
    params.on_worker_event = [counter, name = config.name](const worker_event& e) {
        if (e.what == worker_event::kind::ready) {
            counter->one_ready();
        } else if (e.what != worker_event::kind::started) {
            std::fprintf(stderr, "torchpool-serve: model '%s': %s\n", name.c_str(),
                         e.description.c_str());
        }
    };
    params.faults.enabled = opt.limits.fault_injection;
    return params;
}

}  // namespace

std::vector<served_model> make_models(boost::asio::any_io_executor ex, const server_options& opt,
                                      std::function<void()> all_ready) {
    auto counter = std::make_shared<readiness>();
    counter->all_ready = std::move(all_ready);
    std::vector<served_model> models;
    for (const auto& spec : opt.models) {
        auto config = config_of(spec);
        auto params = params_of(config, opt, counter);
        counter->wanted += params.workers;
        auto workers = std::make_unique<pool>(ex, params);
        const auto max_batch =
            keeps_batch_dimension(config) ? std::max<std::size_t>(1, opt.max_batch) : 1;
        auto batches = std::make_unique<batcher>(
            *workers, batcher::params{.method = config.method,
                                      .max_batch = max_batch,
                                      .delay = opt.batch_delay,
                                      .workers = params.workers,
                                      .timeout = opt.limits.request_timeout});
        models.push_back({std::move(config), std::move(workers), std::move(batches)});
    }
    return models;
}

std::string sample_request(const model_config& model) {
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

}  // namespace torchpool::serve
