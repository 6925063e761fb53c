// The fast path of reading an infer request's JSON (see infer_json.hpp): a scan of the text.
#pragma once

#include "infer_json.hpp"

#include <string>
#include <string_view>

namespace torchpool::serve {

/// The fast path's scan: finds each root.inputs[i].data, reads it if it is an array of numbers,
/// and writes the rest of the text to `skeleton` with that array replaced by its run's index.
/// False if anything needs the streaming path. It does not check the JSON outside the arrays it
/// reads: the skeleton, which keeps all of it, goes through Boost.JSON; and an array replaced
/// by a number keeps a text valid or invalid as it was.
bool scan_request(std::string_view text, request_document& out, std::string& skeleton);

}  // namespace torchpool::serve
