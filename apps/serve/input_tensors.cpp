// An input's tensor from its binary data, its shared-memory region or its JSON data, placed in
// input memory.
#include "input_tensors.hpp"

#include "json_tensor_data.hpp"

#include <cstring>
#include <string>

namespace torchpool::serve {

namespace json = boost::json;

namespace {

// For BOOL, only 0s and 1s: any other byte is no value a model can take.
std::optional<http_error> check_bools(const tensor_spec& spec, std::string_view bytes) {
    if (spec.type != dtype::boolean) {
        return std::nullopt;
    }
    const auto bad_byte = bytes.find_first_not_of(std::string_view("\0\1", 2));
    if (bad_byte == std::string_view::npos) {
        return std::nullopt;
    }
    return bad_request("element " + std::to_string(bad_byte) + " of input '" + spec.name +
                       "' (BOOL binary data) is byte " +
                       std::to_string(static_cast<unsigned char>(bytes[bad_byte])) +
                       ", not 0 or 1");
}

}  // namespace

// An input given as binary data: the bytes its shape takes, and for BOOL only 0s and 1s. A
// view of them when they are in input memory (`view`), else copied there (or into the
// tensor's own bytes).
std::optional<http_error> binary_tensor(const tensor_spec& spec, std::vector<std::int64_t> dims,
                                        std::size_t elements, std::string_view bytes,
                                        const shared_bytes& view, const input_memory& memory,
                                        infer_request& req) {
    const std::size_t want = elements * element_size(spec.type);
    if (bytes.size() != want) {
        return bad_request("input '" + spec.name + "' has shape " + format_shape(dims) + " of " +
                           std::string(oip_datatype(spec.type)) + ", which takes " +
                           std::to_string(want) + " bytes, but its binary data has " +
                           std::to_string(bytes.size()));
    }
    if (auto p = check_bools(spec, bytes)) {
        return p;
    }
    if (view) {
        req.inputs.emplace_back(spec.type, std::move(dims), view);
        return std::nullopt;
    }
    tensor t = placed_tensor(memory, spec.type, std::move(dims), want);
    if (want > 0) {
        std::memcpy(t.writable_bytes().data(), bytes.data(), want);
    }
    req.inputs.push_back(std::move(t));
    return std::nullopt;
}

// An input in a shared-memory region: its shape's bytes exactly, read from the region into
// input memory (or the tensor's own bytes).
std::optional<http_error> region_tensor(const tensor_spec& spec, std::vector<std::int64_t> dims,
                                        std::size_t elements, const region_bytes& where,
                                        const input_memory& memory, infer_request& req) {
    const std::size_t want = elements * element_size(spec.type);
    const std::string what = "input '" + spec.name + "'";
    if (where.byte_size != want) {
        return bad_request(what + " has shape " + format_shape(dims) + " of " +
                           std::string(oip_datatype(spec.type)) + ", which takes " +
                           std::to_string(want) +
                           " bytes, but its parameters.shared_memory_byte_size is " +
                           std::to_string(where.byte_size));
    }
    tensor t = placed_tensor(memory, spec.type, std::move(dims), want);
    if (auto wrong = where.region->read(where.offset, t.writable_bytes(), what)) {
        return bad_request(*wrong);
    }
    if (auto p = check_bools(spec, t.chars())) {
        return p;
    }
    req.inputs.push_back(std::move(t));
    return std::nullopt;
}

// An input given as JSON "data": as many elements as its shape holds, each of its type, written
// into input memory (or the tensor's own bytes). The document's reader replaced "data" by the
// index of its run of numbers.
std::optional<http_error> json_tensor(const tensor_spec& spec, std::vector<std::int64_t> dims,
                                      std::size_t elements, const json::value& data,
                                      const request_document& document, const input_memory& memory,
                                      infer_request& req) {
    const auto& run = document.runs[static_cast<std::size_t>(data.as_int64())];
    const std::size_t count = run.end - run.begin;
    if (count != elements) {
        return bad_request("input '" + spec.name + "' has shape " + format_shape(dims) +
                           ", which holds " + std::to_string(elements) +
                           " elements, but its data has " + std::to_string(count));
    }
    tensor value =
        placed_tensor(memory, spec.type, std::move(dims), count * element_size(spec.type));
    if (auto wrong = json_tensor_data(spec.type, document.numbers.data() + run.begin, count,
                                      value.writable_bytes(), spec.name)) {
        return bad_request(*wrong);
    }
    req.inputs.push_back(std::move(value));
    return std::nullopt;
}

}  // namespace torchpool::serve
