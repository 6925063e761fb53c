#include "runtime.hpp"

#include <torch/cuda.h>

#include <ATen/Parallel.h>
#include <algorithm>
#include <cstdio>
#include <filesystem>

namespace torchpool::torch_worker {

namespace {

c10::ScalarType to_scalar_type(dtype t) {
    switch (t) {
        case dtype::float32:
            return c10::kFloat;
        case dtype::float64:
            return c10::kDouble;
        case dtype::float16:
            return c10::kHalf;
        case dtype::bfloat16:
            return c10::kBFloat16;
        case dtype::int64:
            return c10::kLong;
        case dtype::int32:
            return c10::kInt;
        case dtype::int16:
            return c10::kShort;
        case dtype::int8:
            return c10::kChar;
        case dtype::uint8:
            return c10::kByte;
        case dtype::boolean:
            return c10::kBool;
    }
    return c10::kFloat;
}

dtype from_scalar_type(c10::ScalarType t) {
    switch (t) {
        case c10::kFloat:
            return dtype::float32;
        case c10::kDouble:
            return dtype::float64;
        case c10::kHalf:
            return dtype::float16;
        case c10::kBFloat16:
            return dtype::bfloat16;
        case c10::kLong:
            return dtype::int64;
        case c10::kInt:
            return dtype::int32;
        case c10::kShort:
            return dtype::int16;
        case c10::kChar:
            return dtype::int8;
        case c10::kByte:
            return dtype::uint8;
        case c10::kBool:
            return dtype::boolean;
        default:
            throw model_error(std::string("the model returned a tensor of type ") +
                              c10::toString(t) + ", which torchpool cannot send");
    }
}

std::string describe(const tensor_view& t) {
    std::string text = dtype_name(t.type);
    text += '[';
    for (std::size_t i = 0; i < t.shape.size(); ++i) {
        if (i > 0) {
            text += ',';
        }
        text += std::to_string(t.shape[i]);
    }
    return text + ']';
}

std::string join(const std::vector<std::string>& names) {
    std::string text;
    for (const auto& n : names) {
        text += (text.empty() ? "" : ", ") + n;
    }
    return text;
}

std::string last_line(std::string_view text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
        text.remove_suffix(1);
    }
    const auto nl = text.rfind('\n');
    text = nl == std::string_view::npos ? text : text.substr(nl + 1);
    while (!text.empty() && text.front() == ' ') {
        text.remove_prefix(1);
    }
    return std::string(text);
}

void collect_outputs(const c10::IValue& value, std::vector<tensor_view>& out) {
    if (value.isTensor()) {
        out.push_back(from_torch(value.toTensor()));
    } else if (value.isTuple()) {
        for (const auto& element : value.toTupleRef().elements()) {
            collect_outputs(element, out);
        }
    } else if (value.isTensorList()) {
        const auto list = value.toTensorList();
        for (std::size_t i = 0; i < list.size(); ++i) {
            out.push_back(from_torch(list.get(i)));
        }
    } else {
        throw model_error("the model returned a " + value.tagKind() +
                          "; torchpool sends tensors, or tuples or lists of tensors");
    }
}

}  // namespace

at::Tensor to_torch(const tensor_view& t) {
    // from_blob wants a mutable pointer; the model only reads its inputs (and a model that
    // writes to one changes only the received message, which nobody reads again).
    return torch::from_blob(const_cast<std::byte*>(t.data.data()), t.shape,
                            at::TensorOptions().dtype(to_scalar_type(t.type)));
}

tensor_view from_torch(at::Tensor t) {
    if (!t.device().is_cpu()) {
        t = t.cpu();
    }
    t = t.contiguous();
    tensor_view view{.type = from_scalar_type(t.scalar_type()),
                     .shape = {t.sizes().begin(), t.sizes().end()}};
    view.data = std::span(static_cast<const std::byte*>(t.data_ptr()), t.nbytes());
    view.owner = std::make_shared<at::Tensor>(std::move(t));
    return view;
}

c10::Device pick_device(const std::string& spec, std::size_t slot) {
    if (spec == "cpu") {
        return c10::kCPU;
    }
    if (spec == "round-robin") {
        const auto gpus = torch::cuda::device_count();
        if (gpus == 0) {
            return c10::kCPU;
        }
        return {c10::kCUDA, static_cast<c10::DeviceIndex>(slot % gpus)};
    }
    if (spec == "cuda" || spec.starts_with("cuda:")) {
        c10::DeviceIndex index = 0;
        if (spec.size() > 5) {
            try {
                std::size_t used = 0;
                index = static_cast<c10::DeviceIndex>(std::stoi(spec.substr(5), &used));
                if (used != spec.size() - 5 || index < 0) {
                    throw std::invalid_argument(spec);
                }
            } catch (const std::logic_error&) {
                throw model_error("device '" + spec + "' is not cpu, cuda, cuda:N or round-robin");
            }
        }
        if (!torch::cuda::is_available()) {
            throw model_error("device '" + spec +
                              "' was asked for, but CUDA is not available here: this LibTorch "
                              "build has no CUDA support (Debian's libtorch-dev is CPU-only) or "
                              "no GPU is visible. Use --device cpu.");
        }
        const auto gpus = torch::cuda::device_count();
        if (static_cast<std::size_t>(index) >= gpus) {
            throw model_error("device '" + spec + "' was asked for, but only " +
                              std::to_string(gpus) + " GPU(s) are visible");
        }
        return {c10::kCUDA, index};
    }
    throw model_error("device '" + spec + "' is not cpu, cuda, cuda:N or round-robin");
}

model_runner::model_runner(const std::string& path) : path_(path) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
        throw model_error("the model file '" + path + "' does not exist or is not a file");
    }
    try {
        module_ = torch::jit::load(path, c10::kCPU);
    } catch (const c10::Error& e) {
        throw model_error("cannot load the TorchScript model '" + path +
                          "': " + e.what_without_backtrace());
    } catch (const std::exception& e) {
        throw model_error("cannot load the TorchScript model '" + path + "': " + e.what());
    }
    module_.eval();
    if (method_names().empty()) {
        throw model_error("the model '" + path + "' has no methods to serve");
    }
}

void model_runner::start(const worker::start_info& info, const std::string& device,
                         const std::vector<std::int64_t>& warmup_shape) {
    // Before anything runs an operator: LibTorch sizes its pools on first use.
    if (info.intra_op_threads > 0) {
        at::set_num_threads(static_cast<int>(info.intra_op_threads));
    }
    if (info.inter_op_threads > 0) {
        at::set_num_interop_threads(static_cast<int>(info.inter_op_threads));
    }
    device_ = pick_device(device, info.slot);
    if (!device_.is_cpu()) {
        module_.to(device_);
    }
    if (!warmup_shape.empty()) {
        try {
            c10::InferenceMode guard;
            module_.forward({torch::zeros(warmup_shape).to(device_)});
        } catch (const c10::Error& e) {
            throw model_error("the warm-up run of forward on zeros failed: " +
                              std::string(e.what_without_backtrace()));
        }
    }
}

void model_runner::warm_up_shared(const std::vector<std::int64_t>& warmup_shape,
                                  std::int64_t batches) {
    if (warmup_shape.empty()) {
        return;
    }
    at::set_num_threads(1);
    try {
        c10::InferenceMode guard;
        // The shape as given; with batches > 1, its first size from 1 to batches instead.
        auto shape = warmup_shape;
        const std::int64_t first = batches > 1 ? 1 : shape[0];
        const std::int64_t last = batches > 1 ? batches : shape[0];
        for (shape[0] = first; shape[0] <= last; ++shape[0]) {
            for (int run = 0; run < 2; ++run) {  // the first run profiles, the second optimizes
                module_.forward({torch::zeros(shape)});
            }
        }
    } catch (const std::exception& e) {
        throw model_error("the warm-up run of forward on zeros failed: " + std::string(e.what()));
    }
}

std::vector<std::string> model_runner::method_names() const {
    std::vector<std::string> names;
    for (const auto& m : module_.get_methods()) {
        names.push_back(m.name());
    }
    return names;
}

worker::result model_runner::run(std::string_view name, std::span<const tensor_view> inputs) {
    auto method = module_.find_method(std::string(name));
    if (!method) {
        throw model_error("the model has no method '" + std::string(name) +
                          "'; it has: " + join(method_names()));
    }
    const auto& arguments = method->function().getSchema().arguments();
    const std::size_t wanted = arguments.empty() ? 0 : arguments.size() - 1;  // minus self
    if (inputs.size() != wanted) {
        std::string names;
        for (std::size_t i = 1; i < arguments.size(); ++i) {
            names += (i > 1 ? ", " : "") + arguments[i].name();
        }
        throw model_error("method '" + std::string(name) + "' takes " + std::to_string(wanted) +
                          " tensor(s) (" + names + "); the request has " +
                          std::to_string(inputs.size()));
    }
    std::vector<c10::IValue> args;
    args.reserve(inputs.size());
    std::string described;
    for (const auto& input : inputs) {
        auto t = to_torch(input);
        args.emplace_back(device_.is_cpu() ? t : t.to(device_));
        described += (described.empty() ? "" : ", ") + describe(input);
    }
    c10::IValue output;
    auto failed = [&](const std::string& what) {
        // TorchScript puts the error itself on the last line, after its traceback.
        return model_error("method '" + std::string(name) + "' failed on " + described + ": " +
                           last_line(what) + "\n" + what);
    };
    try {
        c10::InferenceMode guard;
        output = (*method)(std::move(args));
    } catch (const c10::Error& e) {
        throw failed(e.what_without_backtrace());
    } catch (const std::exception& e) {  // the TorchScript interpreter's errors
        throw failed(e.what());
    }
    worker::result result;
    collect_outputs(output, result.tensors);
    return result;
}

void model_runner::serve_methods(worker::server& server) {
    for (const auto& name : method_names()) {
        server.handle(name, [this, name](const worker::call& c) { return run(name, c.tensors); });
    }
}

}  // namespace torchpool::torch_worker
