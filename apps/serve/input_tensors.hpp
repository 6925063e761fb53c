// An input's tensor once its datatype and shape are checked (infer_request.cpp checks them):
// from its binary data, its shared-memory region or its JSON data, each checked against what
// the shape takes, and placed in the model's pool input memory (input_memory.hpp), or the
// tensor's own bytes when there is none. Sans-io.
#pragma once

#include "infer_json.hpp"
#include "input_memory.hpp"
#include "oip.hpp"
#include "shm_regions.hpp"

#include <boost/json/value.hpp>

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace torchpool::serve {

/// From binary data (Triton's extension): exactly the bytes the shape takes, and for BOOL only
/// 0s and 1s. A view of them when they are in input memory already (`view`, else empty),
/// otherwise copied there once. The error, or the tensor appended to `req.inputs`.
std::optional<http_error> binary_tensor(const tensor_spec& spec, std::vector<std::int64_t> dims,
                                        std::size_t elements, std::string_view bytes,
                                        const shared_bytes& view, const input_memory& memory,
                                        infer_request& req);

/// From a shared-memory region: exactly the bytes the shape takes, read from the region into
/// input memory.
std::optional<http_error> region_tensor(const tensor_spec& spec, std::vector<std::int64_t> dims,
                                        std::size_t elements, const region_bytes& where,
                                        const input_memory& memory, infer_request& req);

/// From JSON "data" (`data`: the index of its run of numbers in `document`): as many elements
/// as the shape holds, each of the input's type, written into input memory.
std::optional<http_error> json_tensor(const tensor_spec& spec, std::vector<std::int64_t> dims,
                                      std::size_t elements, const boost::json::value& data,
                                      const request_document& document, const input_memory& memory,
                                      infer_request& req);

}  // namespace torchpool::serve
