// POST /v2/models/{name}/infer's body: the JSON (and Triton's binary data after it) read into a
// model's input tensors, each step a short function that names what is wrong.
#include "infer_json.hpp"
#include "input_tensors.hpp"
#include "oip.hpp"
#include "request_regions.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>

namespace torchpool::serve {

namespace json = boost::json;

namespace {

using problem = std::optional<http_error>;

// Each model input's tensor in the request, and its binary data (Triton's extension) or its
// shared-memory region if any.
struct input_slots {
    explicit input_slots(std::size_t inputs)
        : given(inputs, nullptr), bytes(inputs), views(inputs), regions(inputs) {}
    std::vector<const json::object*> given;
    std::vector<std::optional<std::string_view>> bytes;
    /// The same bytes in input memory, when the body's binary data was read there and they
    /// start at an aligned offset: the tensor is a view of them.
    std::vector<shared_bytes> views;
    std::vector<std::optional<region_bytes>> regions;
};

// The binary data after the JSON header (Triton's binary tensor extension).
struct binary_data {
    std::string_view bytes;
    shared_bytes shared;      // the same bytes, when they were read into input memory
    bool has_header = false;  // Inference-Header-Content-Length was given
};

// The index of the model's input `name`, or the error naming the model's inputs.
std::variant<std::size_t, http_error> input_named(const model_config& model,
                                                  std::string_view name) {
    for (std::size_t at = 0; at < model.inputs.size(); ++at) {
        if (model.inputs[at].name == name) {
            return at;
        }
    }
    std::string names;
    for (const auto& s : model.inputs) {
        names += (names.empty() ? "" : ", ") + s.name;
    }
    return bad_request("model '" + model.name + "' has no input named '" + std::string(name) +
                       "'; its inputs: " + names);
}

// An input's binary data: the next parameters.binary_data_size bytes of `binary` from `*at`.
problem take_binary(const json::object& tensor, const std::string& name, const binary_data& data,
                    std::size_t& at, std::optional<std::string_view>& bytes, shared_bytes& view) {
    const std::string_view binary = data.bytes;
    const auto* params = tensor.if_contains("parameters");
    const auto* size = params && params->is_object()
                           ? params->as_object().if_contains("binary_data_size")
                           : nullptr;
    if (!size) {
        return std::nullopt;
    }
    if (!size->is_int64() || size->as_int64() < 0) {
        return bad_request("parameters.binary_data_size of input '" + name +
                           "' must be a byte count");
    }
    const auto n = static_cast<std::size_t>(size->as_int64());
    if (at + n > binary.size()) {
        return bad_request(
            "input '" + name + "' announces " + std::to_string(n) + " bytes of binary data, but " +
            (data.has_header ? std::to_string(binary.size() - at) + " remain after the JSON header"
                             : std::string("the request has no Inference-Header-Content-Length")));
    }
    bytes = binary.substr(at, n);
    if (data.shared && at % input_alignment == 0) {
        view = data.shared.slice(at, n);
    }
    at += n;
    return std::nullopt;
}

// "inputs": each tensor matched to the model's input of its name; binary data is taken in the
// order of the tensors that announce some, and must all be taken. An input may name a
// shared-memory region instead (read once its shape is checked).
problem match_inputs(const json::array& inputs, const model_config& model,
                     const binary_data& binary, const shm_regions* regions, input_slots& slots) {
    std::size_t binary_at = 0;
    for (const auto& input : inputs) {
        const auto* t = input.if_object();
        const auto* name = t ? t->if_contains("name") : nullptr;
        if (!name || !name->is_string()) {
            return bad_request("each input must be an object with a \"name\"");
        }
        const auto found = input_named(model, name->as_string());
        if (const auto* wrong = std::get_if<http_error>(&found)) {
            return *wrong;
        }
        const auto at = std::get<std::size_t>(found);
        if (slots.given[at]) {
            return bad_request("input '" + model.inputs[at].name + "' is given twice");
        }
        slots.given[at] = t;
        const std::string what = "input '" + model.inputs[at].name + "'";
        auto region = region_of(t, what, regions);
        if (auto* wrong = std::get_if<http_error>(&region)) {
            return *wrong;
        }
        if (auto& in_region = std::get<std::optional<region_bytes>>(region)) {
            if (t->if_contains("data") ||
                (t->if_contains("parameters") && t->at("parameters").is_object() &&
                 t->at("parameters").as_object().if_contains("binary_data_size"))) {
                return bad_request(what +
                                   " names a shared-memory region and also gives its data; give "
                                   "it in one place");
            }
            slots.regions[at] = std::move(in_region);
            continue;
        }
        if (auto p = take_binary(*t, model.inputs[at].name, binary, binary_at, slots.bytes[at],
                                 slots.views[at])) {
            return p;
        }
    }
    if (binary_at != binary.bytes.size()) {
        return bad_request(std::to_string(binary.bytes.size() - binary_at) +
                           " bytes after the JSON header belong to no input (binary_data_size)");
    }
    return std::nullopt;
}

// An input's "datatype", which must be the model's.
problem check_datatype(const json::string& datatype, const tensor_spec& spec,
                       const model_config& model) {
    const auto type = from_oip_datatype(datatype);
    if (!type) {
        return bad_request("input '" + spec.name + "' has datatype \"" + std::string(datatype) +
                           "\", which this server does not know");
    }
    if (*type != spec.type) {
        return bad_request("input '" + spec.name + "' has datatype " + std::string(datatype) +
                           ", but model '" + model.name + "' wants " +
                           std::string(oip_datatype(spec.type)));
    }
    return std::nullopt;
}

// An input's "shape": sizes >= 0 that the model accepts, holding at most max_input_elements.
problem read_shape(const json::array& shape, const tensor_spec& spec, const model_config& model,
                   std::vector<std::int64_t>& dims, std::size_t& elements) {
    for (const auto& d : shape) {
        if (!d.is_int64() || d.as_int64() < 0) {
            return bad_request("the shape of input '" + spec.name + "' must hold sizes >= 0");
        }
        dims.push_back(d.as_int64());
    }
    const auto count = element_count(dims);
    if (!count) {
        return http_error{413, "input '" + spec.name + "' is too large: shape " +
                                   format_shape(dims) + " holds more than " +
                                   std::to_string(max_input_elements) + " elements"};
    }
    elements = *count;
    if (auto wrong = check_shape(spec, dims, model.name); !wrong.empty()) {
        return bad_request(wrong);
    }
    return std::nullopt;
}

// The model's input `spec`, from its tensor in the request (slot `at`: its binary data or
// shared-memory region, if any).
problem read_input(const tensor_spec& spec, const input_slots& slots, std::size_t at,
                   const model_config& model, const request_document& document,
                   const input_memory& memory, infer_request& req) {
    const json::object* t = slots.given[at];
    const auto& bytes = slots.bytes[at];
    const auto& region = slots.regions[at];
    if (!t) {
        return bad_request("input '" + spec.name + "' of model '" + model.name + "' is missing");
    }
    const auto* datatype = t->if_contains("datatype");
    const auto* shape = t->if_contains("shape");
    const auto* data = t->if_contains("data");
    if (!datatype || !datatype->is_string() || !shape || !shape->is_array() ||
        (!data && !bytes && !region)) {
        return bad_request("input '" + spec.name +
                           "' needs \"datatype\", \"shape\" and \"data\" (or binary data)");
    }
    if (auto p = check_datatype(datatype->as_string(), spec, model)) {
        return p;
    }
    std::vector<std::int64_t> dims;
    std::size_t elements = 0;
    if (auto p = read_shape(shape->as_array(), spec, model, dims, elements)) {
        return p;
    }
    if (region) {
        return region_tensor(spec, std::move(dims), elements, *region, memory, req);
    }
    return bytes ? binary_tensor(spec, std::move(dims), elements, *bytes, slots.views[at], memory,
                                 req)
                 : json_tensor(spec, std::move(dims), elements, *data, document, memory, req);
}

// parameters.torchpool_fault: a failure to provoke, for tests.
problem read_fault(const json::value& f, infer_request& req) {
    // Not `is_string() ? as_string() : ""`: that makes a temporary json::string, and the view
    // would outlive it (AddressSanitizer: stack-use-after-scope).
    std::string_view kind;
    if (f.is_string()) {
        kind = f.as_string();
    }
    if (kind == "crash") {
        req.inject = fault::crash(11);
    } else if (kind == "exit") {
        req.inject = fault::exit(1);
    } else if (kind == "hang") {
        req.inject = fault::hang();
    } else if (kind == "leak") {
        req.inject = fault::leak(64u << 20);
    } else if (kind == "delay") {
        req.inject = fault::delay(std::chrono::milliseconds(100));
    } else if (kind == "garbage") {
        req.inject = fault::garbage();
    } else if (kind == "fail") {
        req.inject = fault::fail();
    } else {
        return bad_request(
            "parameters.torchpool_fault must be one of crash, exit, hang, leak, delay, "
            "garbage, fail");
    }
    return std::nullopt;
}

// The request's "parameters": binary_data_output, torchpool_fault.
problem read_parameters(const json::value& parameters, infer_request& req) {
    if (!parameters.is_object()) {
        return bad_request("\"parameters\" must be an object");
    }
    if (const auto* all = parameters.as_object().if_contains("binary_data_output")) {
        req.binary_outputs = all->is_bool() && all->as_bool();
    }
    if (const auto* f = parameters.as_object().if_contains("torchpool_fault")) {
        return read_fault(*f, req);
    }
    return std::nullopt;
}

// A requested output's parameters: classification (Triton's extension), binary_data, a
// shared-memory region.
problem read_output_parameters(const json::object& p, std::string_view name,
                               const json::object& output, const shm_regions* regions,
                               infer_request& req) {
    const std::string what = "output '" + std::string(name) + "'";
    auto region = region_of(&output, what, regions);
    if (auto* wrong = std::get_if<http_error>(&region)) {
        return *wrong;
    }
    if (auto& in_region = std::get<std::optional<region_bytes>>(region)) {
        if (p.if_contains("classification") || p.if_contains("binary_data")) {
            return bad_request(what +
                               " names a shared-memory region; it cannot also be a "
                               "classification or binary data");
        }
        req.output_regions.push_back({std::move(*in_region), std::string(name)});
        return std::nullopt;
    }
    if (const auto* k = p.if_contains("classification")) {
        if (!k->is_int64() || k->as_int64() < 1) {
            return bad_request("parameters.classification of output '" + std::string(name) +
                               "' must be a whole number of classes >= 1");
        }
        req.classifications.emplace_back(name, static_cast<std::size_t>(k->as_int64()));
    }
    if (const auto* b = p.if_contains("binary_data")) {
        if (!b->is_bool()) {
            return bad_request("parameters.binary_data of output '" + std::string(name) +
                               "' must be true or false");
        }
        (b->as_bool() ? req.binary_output_names : req.json_output_names).emplace_back(name);
    }
    return std::nullopt;
}

// "outputs": the model's outputs asked for by name, with their parameters.
problem read_outputs(const json::value& outputs, const model_config& model,
                     const shm_regions* regions, infer_request& req) {
    if (!outputs.is_array()) {
        return bad_request("\"outputs\" must be a list of {\"name\": ...}");
    }
    for (const auto& out : outputs.as_array()) {
        const auto* t = out.if_object();
        const auto* name = t ? t->if_contains("name") : nullptr;
        if (!name || !name->is_string()) {
            return bad_request("each requested output must be an object with a \"name\"");
        }
        if (const auto* p = t->if_contains("parameters"); p && p->is_object()) {
            if (auto wrong =
                    read_output_parameters(p->as_object(), name->as_string(), *t, regions, req)) {
                return wrong;
            }
        }
        const bool known = std::any_of(model.outputs.begin(), model.outputs.end(),
                                       [&](const auto& s) { return s.name == name->as_string(); });
        if (!known) {
            return bad_request("model '" + model.name + "' has no output named '" +
                               std::string(name->as_string()) + "'");
        }
        req.outputs.emplace_back(name->as_string());
    }
    return std::nullopt;
}

// The request's JSON object, after its "id".
problem read_request(const json::object& o, const model_config& model, const binary_data& binary,
                     const request_document& document, const shm_regions* regions,
                     const input_memory& memory, infer_request& req) {
    if (const auto* id = o.if_contains("id")) {
        if (!id->is_string()) {
            return bad_request("\"id\" must be text");
        }
        req.id = std::string(id->as_string());
    }
    const auto* inputs = o.if_contains("inputs");
    if (!inputs || !inputs->is_array() || inputs->as_array().empty()) {
        return bad_request("\"inputs\" must be a non-empty list of tensors");
    }
    input_slots slots(model.inputs.size());
    if (auto p = match_inputs(inputs->as_array(), model, binary, regions, slots)) {
        return p;
    }
    for (std::size_t at = 0; at < model.inputs.size(); ++at) {
        if (auto p = read_input(model.inputs[at], slots, at, model, document, memory, req)) {
            return p;
        }
    }
    if (const auto* parameters = o.if_contains("parameters")) {
        if (auto p = read_parameters(*parameters, req)) {
            return p;
        }
    }
    if (const auto* outputs = o.if_contains("outputs")) {
        return read_outputs(*outputs, model, regions, req);
    }
    return std::nullopt;
}

}  // namespace

std::variant<infer_request, http_error> parse_infer_request(
    std::string_view body, const model_config& model, std::optional<std::size_t> header_length,
    json_reading reading, const shm_regions* regions, const request_placement& placement) {
    const auto& in_memory = placement.binary;
    binary_data binary{
        .bytes = {reinterpret_cast<const char*>(in_memory.bytes().data()), in_memory.size()},
        .shared = in_memory,
        .has_header = header_length.has_value()};
    if (header_length) {
        // With the binary data in input memory, the body is the JSON header already.
        const std::size_t total = body.size() + in_memory.size();
        if (*header_length > total) {
            return bad_request("Inference-Header-Content-Length is " +
                               std::to_string(*header_length) + ", but the body has only " +
                               std::to_string(total) + " bytes");
        }
        if (!in_memory) {
            binary.bytes = body.substr(*header_length);
            body = body.substr(0, *header_length);
        }
    }
    // The small DOM lives in this buffer (or, past it, in blocks of the monotonic resource), so
    // freeing it is one step.
    unsigned char first_block[4096];
    json::monotonic_resource memory(first_block, sizeof first_block);
    request_document document(&memory);
    if (const auto ec = read_request_document(body, document, reading)) {
        return bad_request("the request body is not valid JSON: " + ec.message());
    }
    const auto* o = document.dom.if_object();
    if (!o) {
        return bad_request("the request body must be a JSON object with \"inputs\"");
    }
    infer_request req;
    if (auto p = read_request(*o, model, binary, document, regions, placement.memory, req)) {
        return std::move(*p);
    }
    return req;
}

}  // namespace torchpool::serve
