// HTTP/1.1's rules for a request's head: what the server answers before reading a body.
#include "http_rules.hpp"

#include <boost/beast/http.hpp>

#include <catch2/catch.hpp>

using namespace torchpool::serve;
namespace http = boost::beast::http;

namespace {

http::request_header<> head(http::verb method = http::verb::post, unsigned version = 11) {
    http::request_header<> h;
    h.method(method);
    h.target("/v2/models/fashion/infer");
    h.version(version);
    h.set(http::field::host, "localhost");
    return h;
}

unsigned refused_with(const http::request_header<>& h, std::size_t max_body = 1000) {
    const auto v = check_head(h, max_body);
    return v.refuse ? static_cast<unsigned>(v.refuse->status) : 0;
}

}  // namespace

TEST_CASE("a plain request's head passes", "[serve][http]") {
    auto h = head();
    h.set(http::field::content_length, "1000");
    const auto v = check_head(h, 1000);
    CHECK_FALSE(v.refuse);
    CHECK_FALSE(v.expect_continue);
    h.set(http::field::transfer_encoding, "chunked");
    h.erase(http::field::content_length);
    CHECK(refused_with(h) == 0);
}

TEST_CASE("Host: exactly one in HTTP/1.1, at most one in HTTP/1.0", "[serve][http]") {
    auto h = head();
    h.erase(http::field::host);
    CHECK(refused_with(h) == 400);
    CHECK(check_head(h, 1000).refuse->message == "an HTTP/1.1 request needs a Host header");
    CHECK(refused_with(head(http::verb::get, 10)) == 0);
    auto old = head(http::verb::get, 10);
    old.erase(http::field::host);
    CHECK(refused_with(old) == 0);
    auto two = head();
    two.insert(http::field::host, "elsewhere");
    CHECK(refused_with(two) == 400);
}

TEST_CASE("a transfer coding other than chunked is 501, never read as a body", "[serve][http]") {
    auto h = head();
    h.set(http::field::transfer_encoding, "foo");
    CHECK(refused_with(h) == 501);
    CHECK(check_head(h, 1000).refuse->message ==
          "transfer coding 'foo' is not supported (only chunked)");
    h.set(http::field::transfer_encoding, "gzip, chunked");
    CHECK(refused_with(h) == 501);
    // Both framings at once: the shape of request smuggling.
    auto both = head();
    both.set(http::field::transfer_encoding, "chunked");
    both.set(http::field::content_length, "5");
    CHECK(refused_with(both) == 400);
}

TEST_CASE("an unknown method is 501, a content coding 415, a body over the limit 413 at once",
          "[serve][http]") {
    auto h = head();
    h.method_string("BREW");
    CHECK(refused_with(h) == 501);
    auto gz = head();
    gz.set(http::field::content_encoding, "gzip");
    CHECK(refused_with(gz) == 415);
    gz.set(http::field::content_encoding, "identity");
    CHECK(refused_with(gz) == 0);
    auto big = head();
    big.set(http::field::content_length, "1001");
    CHECK(refused_with(big, 1000) == 413);
}

TEST_CASE("Expect: 100-continue asks for a 100, and any other expectation is 417",
          "[serve][http]") {
    auto h = head();
    h.set(http::field::expect, "100-Continue");
    const auto v = check_head(h, 1000);
    CHECK_FALSE(v.refuse);
    CHECK(v.expect_continue);
    h.set(http::field::expect, "something-else");
    CHECK(refused_with(h) == 417);
    // A body too large is refused before any 100 Continue.
    auto big = head();
    big.set(http::field::expect, "100-continue");
    big.set(http::field::content_length, "5000");
    CHECK(refused_with(big) == 413);
}

TEST_CASE("an absolute-form target is routed by its path", "[serve][http]") {
    CHECK(origin_form("/v2/health/live") == "/v2/health/live");
    CHECK(origin_form("http://127.0.0.1:8000/v2/health/live") == "/v2/health/live");
    CHECK(origin_form("HTTP://host/v2?x=1") == "/v2?x=1");
    CHECK(origin_form("http://host") == "/");
    CHECK(origin_form("http://host?x") == "/");
}

TEST_CASE("dates are IMF-fixdate", "[serve][http]") {
    using namespace std::chrono;
    const sys_days day = 2026y / December / 6;
    CHECK(http_date(day + 14h + 55min + 40s) == "Sun, 06 Dec 2026 14:55:40 GMT");
}
