// What the server answers one request, before it is written as HTTP.
#pragma once

#include <torchpool/task.hpp>

#include <boost/beast/http/status.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace torchpool::serve {

// Not an aggregate: GCC 12 miscompiles braced aggregate temporaries in coroutines.
struct reply {
    reply() = default;
    reply(boost::beast::http::status s, std::string b) : status(s), body(std::move(b)) {}

    boost::beast::http::status status = boost::beast::http::status::ok;
    std::string body;
    const char* content_type = "application/json";
    std::string allow;                         // for 405
    bool retry_after = false;                  // for 503
    std::optional<std::size_t> header_length;  // Inference-Header-Content-Length
    /// Written after `body`, from where their bytes are (large binary outputs).
    std::vector<tensor> attachments;
    /// The served model of an infer request, for the metrics; empty for any other answer.
    std::string model;
};

/// 499, as nginx counts it: the client went away before its answer, so none is written.
constexpr auto client_closed_request = static_cast<boost::beast::http::status>(499);

}  // namespace torchpool::serve
