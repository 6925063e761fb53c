#include "http_rules.hpp"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/verb.hpp>

#include <charconv>
#include <ctime>

namespace torchpool::serve {

namespace http = boost::beast::http;

namespace {

std::string_view trimmed(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
        s.remove_suffix(1);
    }
    return s;
}

}  // namespace

head_verdict check_head(const http::request_header<>& head, std::size_t max_body_bytes) {
    const auto refuse = [](http::status s, std::string message) {
        return head_verdict{early_answer{s, std::move(message)}, false};
    };
    if (head.method() == http::verb::unknown) {
        return refuse(http::status::not_implemented,
                      "method " + std::string(head.method_string()) + " is not supported");
    }
    // One pass over the fields (on every request's path), then the rules in order.
    std::size_t hosts = 0, codings = 0, lengths = 0;
    std::string_view coding, length, content_coding, expect;
    bool has_content_coding = false, has_expect = false;
    for (const auto& f : head) {
        switch (f.name()) {
            case http::field::host:
                ++hosts;
                break;
            case http::field::transfer_encoding:
                ++codings;
                coding = trimmed(f.value());
                break;
            case http::field::content_length:
                ++lengths;
                length = trimmed(f.value());
                break;
            case http::field::content_encoding:
                has_content_coding = true;
                content_coding = trimmed(f.value());
                break;
            case http::field::expect:
                has_expect = true;
                expect = trimmed(f.value());
                break;
            default:
                break;
        }
    }
    if (hosts > 1 || (hosts == 0 && head.version() >= 11)) {  // HTTP/1.0 may leave it out
        return refuse(http::status::bad_request, hosts == 0
                                                     ? "an HTTP/1.1 request needs a Host header"
                                                     : "a request may have only one Host header");
    }
    if (codings > 0) {
        if (lengths > 0) {
            return refuse(http::status::bad_request,
                          "a request may not have both Transfer-Encoding and Content-Length");
        }
        if (codings > 1 || !boost::beast::iequals(coding, "chunked")) {
            return refuse(http::status::not_implemented, "transfer coding '" + std::string(coding) +
                                                             "' is not supported (only chunked)");
        }
    }
    if (has_content_coding && !boost::beast::iequals(content_coding, "identity")) {
        return refuse(http::status::unsupported_media_type,
                      "content coding '" + std::string(content_coding) +
                          "' is not supported; send the body as it is");
    }
    if (lengths > 0) {
        std::size_t bytes = 0;
        const auto [end, err] =
            std::from_chars(length.data(), length.data() + length.size(), bytes);
        if (err == std::errc{} && end == length.data() + length.size() && bytes > max_body_bytes) {
            return refuse(http::status::payload_too_large,
                          "the request body is over the limit of " +
                              std::to_string(max_body_bytes) + " bytes (--max-body-bytes)");
        }
    }
    head_verdict verdict;
    if (has_expect) {
        if (!boost::beast::iequals(expect, "100-continue")) {
            return refuse(
                http::status::expectation_failed,
                "Expect: " + std::string(expect) + " is not supported (only 100-continue)");
        }
        verdict.expect_continue = true;
    }
    return verdict;
}

std::string_view origin_form(std::string_view target) {
    for (const std::string_view scheme : {"http://", "https://"}) {
        if (target.size() >= scheme.size() &&
            boost::beast::iequals(target.substr(0, scheme.size()), scheme)) {
            const auto rest = target.substr(scheme.size());
            const auto path = rest.find_first_of("/?");
            if (path == std::string_view::npos || rest[path] == '?') {
                return "/";  // an empty path is the root
            }
            return rest.substr(path);
        }
    }
    return target;
}

std::string http_date(std::chrono::system_clock::time_point t) {
    const std::time_t seconds = std::chrono::system_clock::to_time_t(t);
    std::tm utc{};
    ::gmtime_r(&seconds, &utc);
    char text[64];
    const auto n = std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &utc);
    return {text, n};
}

const std::string& date_cache::at(std::chrono::system_clock::time_point now) {
    const auto second = std::chrono::floor<std::chrono::seconds>(now);
    if (second != second_ || text_.empty()) {
        second_ = second;
        text_ = http_date(second);
    }
    return text_;
}

}  // namespace torchpool::serve
