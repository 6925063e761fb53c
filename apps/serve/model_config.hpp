// What the inference server knows of a model it serves: its tensors' names, datatypes and
// shapes, and the method to run, read from a small JSON file beside the TorchScript file
// (model.pt -> model.json), written by whoever made the model (the trainer writes one for the
// default model). Nothing here is specific to one model.
//
//     {"method": "forward",
//      "inputs":  [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
//      "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10],
//                   "labels": ["T-shirt/top", "Trouser", ...]}]}
//
// A -1 in a shape is a size the request chooses (the batch).
#pragma once

#include <torchpool/task.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace torchpool::serve {

/// Open Inference Protocol datatype names ("FP32", "INT64", "BOOL", ...).
std::string_view oip_datatype(dtype t) noexcept;
/// The dtype of an Open Inference Protocol datatype name; nullopt if unknown (e.g. BYTES).
std::optional<dtype> from_oip_datatype(std::string_view name) noexcept;

struct tensor_spec {
    std::string name;
    dtype type = dtype::float32;
    std::vector<std::int64_t> shape;  // -1: any size
    /// An output's class names, by index ("labels": [...]), for Triton's classification
    /// extension; empty if none.
    std::vector<std::string> labels;
};

struct model_config {
    std::string name;  // as served (--model NAME=PATH)
    std::string path;  // the TorchScript file
    std::string version = "1";
    std::string method = "forward";
    std::vector<tensor_spec> inputs;
    std::vector<tensor_spec> outputs;
};

/// Whether requests for `model` can be stacked into batches: every input and output has a
/// first dimension, and it is free (-1). A model with a fixed first size (or a scalar) takes
/// each request as it is, never a batch.
bool keeps_batch_dimension(const model_config& model) noexcept;

/// Reads `path`'s config (same path, extension .json). Throws std::runtime_error naming the
/// file and what is wrong.
model_config load_model_config(std::string name, const std::string& path);

/// Parses a config's JSON text; `where` names it in errors.
model_config parse_model_config(std::string name, std::string path, std::string_view json,
                                const std::string& where);

/// Empty when `shape` fits `spec` (same rank, equal sizes where the spec fixes one), else
/// what is wrong, e.g. "has shape [1, 28, 28], but model 'fashion' wants [-1, 1, 28, 28]".
std::string check_shape(const tensor_spec& spec, const std::vector<std::int64_t>& shape,
                        const std::string& model);

std::string format_shape(const std::vector<std::int64_t>& shape);

/// The most elements an input of a request may have (1 GiB of FP32).
inline constexpr std::uint64_t max_input_elements = std::uint64_t{1} << 28;

/// The number of elements of a tensor of `shape` (sizes >= 0), checked before each
/// multiplication; nullopt past `limit` (so that no product can wrap around).
std::optional<std::uint64_t> element_count(const std::vector<std::int64_t>& shape,
                                           std::uint64_t limit = max_input_elements);

}  // namespace torchpool::serve
