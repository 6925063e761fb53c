// A request fed to a request_body parser the way a connection feeds it, for the tests of the
// body reader (unit tests and the fuzz target).
#pragma once

#include "request_body.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>

#include <algorithm>
#include <string>
#include <string_view>
#include <variant>

namespace torchpool::serve::test {

/// `head`, then `body` in pieces of `piece` bytes, through a request_body parser whose binary
/// data after `text_bytes` goes to `binary` (given once the head is parsed, as the session
/// does): the message, or what went wrong.
inline std::variant<boost::beast::http::request<request_body>, std::string> feed_request_body(
    std::string_view head, std::string_view body, std::size_t text_bytes, shared_bytes binary,
    std::size_t piece) {
    namespace http = boost::beast::http;
    http::request_parser<request_body> parser;
    parser.body_limit(boost::none);
    boost::beast::error_code ec;
    parser.put(boost::asio::buffer(head.data(), head.size()), ec);
    if (ec || !parser.is_header_done()) {
        return "the head did not parse: " + ec.message();
    }
    parser.get().body().binary = std::move(binary);
    parser.get().body().text_bytes = text_bytes;
    for (std::size_t at = 0; !parser.is_done();) {
        const auto n = std::min(piece, body.size() - at);
        const auto used = parser.put(boost::asio::buffer(body.data() + at, n), ec);
        if (ec == http::error::need_more) {
            ec = {};
        }
        if (ec || (used == 0 && n > 0)) {
            return "the body reader refused its body: " + ec.message();
        }
        at += used;
    }
    return parser.release();
}

}  // namespace torchpool::serve::test
