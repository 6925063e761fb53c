#include "session.hpp"

#include "oip.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <array>
#include <optional>
#include <tuple>

namespace torchpool::serve {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using clock = connection::clock;
using stage = connection::stage;

namespace {

constexpr auto as_tuple = asio::as_tuple(asio::use_awaitable);

// The most bytes a request's line and header fields may take (Beast's default is 8 KiB).
constexpr std::uint32_t max_head_bytes = 16 * 1024;

// What reading a request gave.
struct incoming {
    enum class kind {
        request,  // whole, in the parser
        answer,   // answered from what was read; the rest is not read, so a staged close follows
        close,    // nothing to answer: the client is done, was cut, or the server drains
    };
    incoming() = default;
    explicit incoming(kind k) : what(k) {}
    explicit incoming(reply r) : what(kind::answer), early(std::move(r)) {}

    kind what = kind::close;
    reply early;
};

class session {
public:
    session(connection_registry::handle self, session_context context, bool over_limit)
        : socket_(self->socket), self_(self), ctx_(context), over_limit_(over_limit) {}

    asio::awaitable<void> run();

private:
    void enter(stage s, clock::time_point deadline) { ctx_.registry.enter(self_, s, deadline); }
    bool cut() const { return self_->cut; }

    asio::awaitable<incoming> read_request();
    /// The first bytes of a request, within the idle deadline (or a new connection's header
    /// deadline); false if none came.
    asio::awaitable<bool> await_first_bytes();
    asio::awaitable<incoming> read_body(bool expect_continue);
    /// Bytes of the body still to come that are all binary data bound for input memory (the
    /// JSON header is whole): read from the socket straight into place. 0 otherwise.
    std::size_t binary_left() const;
    incoming read_failed(const boost::system::error_code& ec) const;
    /// Writes `r` (its head only for HEAD); false if the connection is done.
    asio::awaitable<bool> write(reply r, bool head_only, bool keep_alive);
    /// After an early answer: half-close, then read and drop what the client still sends (it
    /// may be writing the body the server did not read) for a bounded time, so that it reads
    /// the answer rather than a reset.
    asio::awaitable<void> staged_close();

    tcp::socket& socket_;  // the registry's
    connection_registry::handle self_;
    session_context ctx_;
    bool over_limit_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<request_body>> parser_;
    clock::time_point head_began_;
};

asio::awaitable<void> session::run() {
    head_began_ = clock::now();
    enter(stage::waiting, head_began_ + ctx_.limits.header_timeout);
    while (true) {
        auto got = co_await read_request();
        if (got.what == incoming::kind::close) {
            break;
        }
        bool head_only = false;
        bool keep_alive = false;
        reply r;
        if (got.what == incoming::kind::answer) {
            r = std::move(got.early);
        } else {
            auto req = parser_->release();
            head_only = req.method() == http::verb::head;
            keep_alive = req.keep_alive();
            enter(stage::handling, clock::time_point::max());
            r = co_await ctx_.app.answer(std::move(req), socket_);
        }
        // Every answer counts, in this one place, including those given before routing.
        ctx_.metrics.answered(r.model, static_cast<unsigned>(r.status));
        if (r.status == client_closed_request || cut()) {
            break;  // the client went away while its request ran: nobody to answer
        }
        keep_alive = keep_alive && !ctx_.stopping;
        if (!co_await write(std::move(r), head_only, keep_alive)) {
            break;
        }
        if (got.what == incoming::kind::answer) {
            co_await staged_close();
            break;
        }
        if (!keep_alive) {
            break;
        }
        self_->kept_alive = true;
    }
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
}

asio::awaitable<bool> session::await_first_bytes() {
    if (self_->kept_alive) {
        enter(stage::waiting, clock::now() + ctx_.limits.idle_timeout);
    }
    boost::system::error_code unknown;
    if (ctx_.stopping && socket_.available(unknown) == 0) {
        co_return false;  // the drain: no new request is read
    }
    auto [ec, n] = co_await socket_.async_read_some(buffer_.prepare(4096), as_tuple);
    buffer_.commit(n);
    if (self_->kept_alive) {
        head_began_ = clock::now();  // the head's time counts from its first byte
    }
    co_return !ec && !cut();
}

asio::awaitable<incoming> session::read_request() {
    parser_.emplace();
    parser_->body_limit(ctx_.limits.max_body_bytes);
    parser_->header_limit(max_head_bytes);
    if (buffer_.size() == 0) {
        if (!co_await await_first_bytes()) {
            co_return incoming(incoming::kind::close);
        }
    } else if (self_->kept_alive) {
        head_began_ = clock::now();  // a pipelined request: its first bytes are here already
    }
    // The head first: what it asks is checked before any of the body is read.
    enter(stage::head, head_began_ + ctx_.limits.header_timeout);
    // The head usually came whole with its first bytes: parse it from the buffer, without
    // another read operation, and read only if some is still missing.
    boost::system::error_code ec;
    buffer_.consume(parser_->put(buffer_.data(), ec));
    if (ec == http::error::need_more) {
        ec = {};
    }
    if (!ec && !parser_->is_header_done()) {
        std::tie(ec, std::ignore) =
            co_await http::async_read_header(socket_, buffer_, *parser_, as_tuple);
    }
    if (ec || cut()) {
        co_return read_failed(ec);
    }
    const auto verdict = check_head(parser_->get(), ctx_.limits.max_body_bytes);
    if (verdict.refuse) {
        co_return incoming(reply{verdict.refuse->status, error_json(verdict.refuse->message)});
    }
    if (over_limit_) {
        reply busy{http::status::service_unavailable,
                   error_json("too many connections (--max-connections " +
                              std::to_string(ctx_.limits.max_connections) + "); try again")};
        busy.retry_after = true;
        co_return incoming(std::move(busy));
    }
    if (const auto length = parser_->content_length()) {
        ctx_.app.place_binary(parser_->get(), *length);
    }
    co_return co_await read_body(verdict.expect_continue);
}

asio::awaitable<incoming> session::read_body(bool expect_continue) {
    boost::system::error_code ec;
    auto& parser = *parser_;
    if (expect_continue && !parser.is_done()) {
        static constexpr std::string_view go_on = "HTTP/1.1 100 Continue\r\n\r\n";
        enter(stage::writing, ctx_.limits.transfer_deadline(clock::now(), go_on.size()));
        std::tie(ec, std::ignore) =
            co_await asio::async_write(socket_, asio::buffer(go_on), as_tuple);
    }
    const auto began = clock::now();
    std::uint64_t received = buffer_.size();
    enter(stage::body, ctx_.limits.transfer_deadline(began, received));
    // The body often came with the head: parse what the buffer holds first, without another
    // read operation, and read only what is still missing.
    while (!ec && !parser.is_done() && buffer_.size() > 0) {
        boost::system::error_code pec;
        const auto used = parser.put(buffer_.data(), pec);
        buffer_.consume(used);
        if (pec == http::error::need_more || (!pec && used == 0)) {
            break;
        }
        ec = pec;
    }
    // The rest, with its deadline moved on by what arrives: at least the minimum rate.
    while (!ec && !parser.is_done() && !cut() && binary_left() == 0) {
        const auto before = buffer_.size();
        std::size_t used = 0;
        std::tie(ec, used) = co_await http::async_read_some(socket_, buffer_, parser, as_tuple);
        received += used + buffer_.size() - before;
        enter(stage::body, ctx_.limits.transfer_deadline(began, received));
    }
    // What is left is binary data bound for input memory: read from the socket straight there.
    // The parser is not told: the message is released as it is, its body whole.
    if (const std::size_t left = ec || cut() ? 0 : binary_left(); left > 0) {
        const auto into = parser.get().body().binary.writable_bytes();
        for (std::size_t at = into.size() - left; !ec && !cut() && at < into.size();) {
            std::size_t n = 0;
            std::tie(ec, n) = co_await socket_.async_read_some(
                asio::buffer(into.data() + at, into.size() - at), as_tuple);
            at += n;
            received += n;
            enter(stage::body, ctx_.limits.transfer_deadline(began, received));
        }
    }
    if (ec || cut()) {
        co_return read_failed(ec);
    }
    co_return incoming(incoming::kind::request);
}

std::size_t session::binary_left() const {
    const auto& parser = *parser_;
    const auto& body = parser.get().body();
    const auto left = parser.content_length_remaining();
    // Only once the JSON header is whole and the buffer holds nothing the parser has not had
    // (while the body is not done, the parser takes every byte of it that the buffer holds).
    if (!body.binary || !left || *left == 0 || *left > body.binary.size() ||
        body.text.size() != body.text_bytes || buffer_.size() != 0) {
        return 0;
    }
    return static_cast<std::size_t>(*left);
}

incoming session::read_failed(const boost::system::error_code& ec) const {
    if (cut() || ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
        return incoming(incoming::kind::close);  // the client is done, too slow, or drained
    }
    if (ec == http::error::body_limit) {
        return incoming(reply{
            http::status::payload_too_large,
            error_json("the request body is over the limit of " +
                       std::to_string(ctx_.limits.max_body_bytes) + " bytes (--max-body-bytes)")});
    }
    if (ec == http::error::header_limit) {
        // The request line alone past the limit: its target is too long (414). The parser has
        // the target once it has read the line whole.
        const std::string_view got(static_cast<const char*>(buffer_.data().data()), buffer_.size());
        const bool line_too_long =
            parser_->get().target().empty() && got.find("\r\n") == std::string_view::npos;
        return incoming(reply{
            line_too_long ? http::status::uri_too_long
                          : http::status::request_header_fields_too_large,
            error_json(
                std::string(line_too_long ? "the request target" : "the request's header fields") +
                " are over the limit of " + std::to_string(max_head_bytes) + " bytes")});
    }
    return incoming(
        reply{http::status::bad_request, error_json("malformed HTTP request: " + ec.message())});
}

asio::awaitable<bool> session::write(reply r, bool head_only, bool keep_alive) {
    http::response<http::string_body> out{r.status, 11};
    out.set(http::field::server, "torchpool-serve");
    out.set(http::field::content_type, r.content_type);
    if (!r.allow.empty()) {
        out.set(http::field::allow, r.allow);
    }
    if (r.retry_after) {
        out.set(http::field::retry_after, "1");
    }
    if (r.header_length) {
        out.set("Inference-Header-Content-Length", std::to_string(*r.header_length));
    }
    out.set(http::field::date, ctx_.dates.at(std::chrono::system_clock::now()));
    out.keep_alive(keep_alive);
    out.body() = std::move(r.body);
    out.prepare_payload();
    // Large binary outputs follow the body from where they are, in a second write.
    std::vector<asio::const_buffer> attached;
    std::size_t attached_bytes = 0;
    for (const auto& t : r.attachments) {
        const auto bytes = t.bytes();
        attached.emplace_back(bytes.data(), bytes.size());
        attached_bytes += bytes.size();
    }
    if (attached_bytes > 0) {
        out.content_length(out.body().size() + attached_bytes);
    }
    enter(stage::writing,
          ctx_.limits.transfer_deadline(clock::now(), out.body().size() + attached_bytes + 256));
    boost::system::error_code ec;
    if (head_only) {
        // HEAD: the head a GET would get, Content-Length included, and no body.
        http::response_serializer<http::string_body> head(out);
        std::tie(ec, std::ignore) = co_await http::async_write_header(socket_, head, as_tuple);
    } else {
        std::tie(ec, std::ignore) = co_await http::async_write(socket_, out, as_tuple);
        if (!ec && !cut() && attached_bytes > 0) {
            std::tie(ec, std::ignore) = co_await asio::async_write(socket_, attached, as_tuple);
        }
    }
    co_return !ec && !cut();
}

asio::awaitable<void> session::staged_close() {
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    enter(stage::closing, clock::now() + std::min<clock::duration>(ctx_.limits.header_timeout,
                                                                   std::chrono::seconds(2)));
    std::array<char, 16384> sink;
    for (std::size_t drained = 0; drained < (64u << 20);) {
        auto [ec, n] = co_await socket_.async_read_some(asio::buffer(sink), as_tuple);
        if (ec) {
            break;  // the client's end, or the deadline
        }
        drained += n;
    }
}

}  // namespace

asio::awaitable<void> serve_connection(connection_registry::handle self, session_context context,
                                       bool over_limit) {
    struct leave {
        connection_registry& registry;
        connection_registry::handle self;
        ~leave() { registry.remove(self); }
    } counted{context.registry, self};
    session s(self, context, over_limit);
    co_await s.run();
}

}  // namespace torchpool::serve
