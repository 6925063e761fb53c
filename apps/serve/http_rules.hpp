// HTTP/1.1's rules for a request's head (RFC 9110, 9112), checked before its body is read:
// what the server answers at once, and how it reads targets and writes dates. Sans-io, so
// that each rule has a unit test.
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/status.hpp>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace torchpool::serve {

/// An answer given before the body is read; the connection then closes, since the body (if
/// any) is not read as the next request.
struct early_answer {
    boost::beast::http::status status;
    std::string message;
};

/// What a request's head asks beyond its method and target.
struct head_verdict {
    std::optional<early_answer> refuse;  ///< answer this at once, and close
    bool expect_continue = false;        ///< send 100 Continue before reading the body
};

/// Checks a request's head: a method the server knows (501), exactly one Host (400; none is
/// fine in HTTP/1.0), no
/// transfer coding but chunked (501) nor both Transfer-Encoding and Content-Length (400), no
/// content coding (415), a body within `max_body_bytes` (413), and Expect: 100-continue only
/// (417).
head_verdict check_head(const boost::beast::http::request_header<>& head,
                        std::size_t max_body_bytes);

/// The target in origin form: an absolute-form target ("http://host:8000/v2?x") becomes
/// its path and query ("/v2?x"); "/" if it has no path.
std::string_view origin_form(std::string_view target);

/// `t` as an HTTP date (IMF-fixdate), e.g. "Sun, 06 Dec 2026 14:55:40 GMT".
std::string http_date(std::chrono::system_clock::time_point t);

/// The Date header's text, made anew once a second rather than once a response.
class date_cache {
public:
    const std::string& at(std::chrono::system_clock::time_point now);

private:
    std::chrono::system_clock::time_point second_{};
    std::string text_;
};

}  // namespace torchpool::serve
