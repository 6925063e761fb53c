// The Open Inference Protocol (KServe v2 REST), as the server speaks it: parsing an infer
// request's JSON into tensors for a model (infer_request.cpp), and writing the JSON of
// responses (infer_response.cpp), metadata and errors (oip.cpp). Sans-io: text in, values out,
// so that every bad input has a unit test.
#pragma once

#include "infer_json.hpp"
#include "input_memory.hpp"
#include "model_config.hpp"
#include "shm_regions.hpp"
#include <torchpool/task.hpp>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace torchpool::serve {

/// A request the server refuses: the HTTP status and what was wrong, for {"error": ...}.
struct http_error {
    unsigned status = 400;
    std::string message;
};

/// A 400 that says what was wrong with the request.
inline http_error bad_request(std::string message) {
    return {400, std::move(message)};
}

struct infer_request {
    std::optional<std::string> id;  // echoed in the response, even if empty; none if not given
    /// One per model input, in the model's order.
    std::vector<tensor> inputs;
    /// Outputs asked for by name; empty: all of them.
    std::vector<std::string> outputs;
    /// Outputs to send as binary data (Triton's extension): all (parameters.
    /// binary_data_output), or those named with parameters.binary_data: true; an output's own
    /// binary_data: false overrides binary_data_output (json_output_names).
    bool binary_outputs = false;
    std::vector<std::string> binary_output_names;
    std::vector<std::string> json_output_names;
    /// Outputs asked as classifications (Triton's classification extension:
    /// parameters.classification = k): the top k classes of each row, as "score:index:label"
    /// strings (BYTES), always in JSON.
    std::vector<std::pair<std::string, std::size_t>> classifications;
    /// parameters.torchpool_fault ("crash", "exit", "hang", "leak", "delay", "garbage",
    /// "fail"): a failure to provoke, for tests; refused unless the server allows it.
    fault inject;
    /// Outputs to write into a shared-memory region (Triton's system shared-memory
    /// extension: parameters.shared_memory_region, _offset, _byte_size), not into the
    /// response. The request holds each region until it is answered.
    struct output_region : region_bytes {
        std::string name;
    };
    std::vector<output_region> output_regions;
};

/// Where an infer request's bytes are, and where its tensors go.
struct request_placement {
    /// The model's pool's input memory: JSON data and shared-memory regions' bytes are written
    /// there, and binary data is copied there unless `binary` holds it already. Empty: the
    /// tensors' own bytes.
    input_memory memory;
    /// The binary data after the JSON header, when the session read it straight into input
    /// memory (request_body): the body is then the JSON header alone, and binary inputs are
    /// views of this (at aligned offsets; others are copied).
    shared_bytes binary;
};

/// Parses the body of POST /v2/models/{name}/infer for `model`: JSON tensors with name,
/// shape, datatype and data (flat or nested, row-major), each checked against the model.
/// With `header_length` (the Inference-Header-Content-Length header of Triton's binary tensor
/// extension), the JSON is that many bytes and inputs with parameters.binary_data_size take
/// their raw bytes from what follows, in order.
/// Inputs and outputs may name a region of `regions` (Triton's system shared-memory
/// extension) instead: an input's bytes are read from it here; with no regions, such a
/// request is refused.
/// `reading`: the JSON's fast path when it can be taken (tests compare it with the other).
/// `placement`: where the binary data is, if not in `body`, and where the tensors go.
std::variant<infer_request, http_error> parse_infer_request(
    std::string_view body, const model_config& model,
    std::optional<std::size_t> header_length = std::nullopt,
    json_reading reading = json_reading::fast_when_possible, const shm_regions* regions = nullptr,
    const request_placement& placement = {});

/// A response body; with binary outputs, the JSON is its first `header_length` bytes (sent as
/// Inference-Header-Content-Length) and the outputs' bytes follow.
struct encoded_response {
    std::string body;
    std::optional<std::size_t> header_length;
    /// Binary outputs written after `body` from where they are (a worker's output memory),
    /// rather than copied into it: all of them, in order, once they come to
    /// `attach_binary_from` bytes or more.
    std::vector<tensor> attachments;
};

/// Binary outputs of this many bytes in all are written from where they are (see
/// encoded_response::attachments); smaller ones are copied into the body, which costs less
/// than a second write.
inline constexpr std::size_t attach_binary_from = 64 * 1024;

/// The response to an infer request: the model's outputs (`results`, in the config's order),
/// those asked for, as JSON tensors (or binary data, or written into the shared-memory region
/// the request named for them). An error if the model returned something else, or if an
/// output does not fit its region.
/// `batch_rows`: the rows of the task the request ran in (parameters.torchpool_batch_rows).
std::variant<encoded_response, http_error> infer_response(const model_config& model,
                                                          const infer_request& request,
                                                          const std::vector<tensor>& results,
                                                          std::size_t batch_rows = 0);

/// {"error": message}
std::string error_json(std::string_view message);
/// GET /v2; `shared_memory`: the system shared-memory extension is on.
std::string server_metadata_json(bool shared_memory = false);
/// GET /v2/systemsharedmemory[/region/{name}]/status: [{"name", "key", "offset", "byte_size"}]
std::string shm_status_json(const std::vector<std::shared_ptr<const shm_region>>& regions);
/// GET /v2/models/{name}
std::string model_metadata_json(const model_config& model);
/// GET /v2/models/{name}/ready: {"name": ..., "ready": ...}
std::string model_ready_json(const model_config& model, bool ready);

}  // namespace torchpool::serve
