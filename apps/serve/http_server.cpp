#include "http_server.hpp"

#include "http_rules.hpp"
#include "oip.hpp"
#include <torchpool/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <limits>
#include <memory>
#include <optional>
#include <tuple>

#include <sys/socket.h>

namespace torchpool::serve {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr auto as_tuple = asio::as_tuple(asio::use_awaitable);

// The most bytes a request's line and header fields may take (Beast's default is 8 KiB).
constexpr std::uint32_t max_head_bytes = 16 * 1024;

// Not an aggregate: GCC 12 miscompiles braced aggregate temporaries in coroutines.
struct http_server::response {
    response() = default;
    response(http::status s, std::string b, std::string a = {}, bool retry = false)
        : status(s), body(std::move(b)), allow(std::move(a)), retry_after(retry) {}

    http::status status = http::status::ok;
    std::string body;
    std::string allow;         // for 405
    bool retry_after = false;  // for 503
    const char* content_type = "application/json";
    std::optional<std::size_t> header_length;  // Inference-Header-Content-Length
    std::string model;  // the served model of an infer request, for the metrics
};

http_server::http_server(tcp::acceptor& acceptor, std::vector<served_model>& models,
                         server_metrics& metrics, http_limits limits)
    : acceptor_(acceptor),
      models_(models),
      metrics_(metrics),
      limits_(limits),
      deadline_timer_(acceptor.get_executor()) {}

void http_server::stop() {
    if (stopping_) {
        return;
    }
    stopping_ = true;
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    for (auto& s : sessions_) {
        boost::system::error_code unknown;
        if (s.idle && s.socket->available(unknown) == 0 && !unknown) {
            s.socket->cancel(unknown);  // its read ends; a busy one closes after its response
        }
    }
    if (sessions_.empty() && drained_) {
        std::exchange(drained_, {})();
    }
}

void http_server::close_all() {
    for (auto& s : sessions_) {
        boost::system::error_code ignored;
        s.socket->close(ignored);
    }
}

bool http_server::ready() const {
    if (stopping_) {
        return false;
    }
    for (const auto& m : models_) {
        if (!m.workers->health().ready) {
            return false;
        }
    }
    return true;
}

const std::string& http_server::date_now() {
    const auto now = std::chrono::system_clock::now();
    const auto second = std::chrono::floor<std::chrono::seconds>(now);
    if (second != date_second_) {  // once a second, not once a response
        date_second_ = second;
        date_text_ = http_date(second);
    }
    return date_text_;
}

served_model* http_server::find(std::string_view name) {
    for (auto& m : models_) {
        if (m.config.name == name) {
            return &m;
        }
    }
    return nullptr;
}

asio::awaitable<void> http_server::run() {
    while (!stopping_) {
        auto [ec, socket] = co_await acceptor_.async_accept(as_tuple);
        if (ec) {
            if (stopping_ || ec == asio::error::operation_aborted) {
                break;
            }
            continue;  // e.g. EMFILE: the next accept may succeed
        }
        // Responses go out at once: with Nagle's algorithm a response written in two segments
        // waits for the client's delayed acknowledgement of the first (up to 40 ms).
        boost::system::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        asio::co_spawn(acceptor_.get_executor(), session(std::move(socket)), asio::detached);
    }
}

asio::awaitable<void> http_server::enforce_deadlines() {
    using namespace std::chrono_literals;
    const auto period = std::clamp<clock::duration>(limits_.read_timeout / 8, 1ms, 1s);
    enforcing_ = true;
    while (!sessions_.empty()) {
        deadline_timer_.expires_after(period);
        co_await deadline_timer_.async_wait(as_tuple);
        const auto now = clock::now();
        for (auto& s : sessions_) {
            if (s.deadline <= now && !s.timed_out) {
                s.timed_out = true;
                boost::system::error_code ignored;
                s.socket->cancel(ignored);  // its read or write ends, and it closes
            }
        }
    }
    enforcing_ = false;
}

asio::awaitable<void> http_server::session(tcp::socket socket) {
    sessions_.push_back({&socket});
    const auto self = std::prev(sessions_.end());
    if (!enforcing_) {
        asio::co_spawn(acceptor_.get_executor(), enforce_deadlines(), asio::detached);
    }
    const auto read_or_write_from_now = [&] {
        self->deadline = clock::now() + limits_.read_timeout;
        self->timed_out = false;
    };
    struct leave {
        http_server& server;
        std::list<session_state>::iterator at;
        ~leave() {
            server.sessions_.erase(at);
            if (server.sessions_.empty()) {
                server.deadline_timer_.cancel();  // nothing to watch: its loop ends now
            }
            if (server.stopping_ && server.sessions_.empty() && server.drained_) {
                std::exchange(server.drained_, {})();
            }
        }
    } counted{*this, self};
    beast::flat_buffer buffer;
    const bool over_limit = sessions_.size() > limits_.max_connections;
    while (!stopping_ || buffer.size() > 0) {
        http::request_parser<http::string_body> parser;
        parser.body_limit(limits_.max_body_bytes);
        parser.header_limit(max_head_bytes);
        read_or_write_from_now();
        self->idle = buffer.size() == 0;
        // The head first: what it asks is checked before any of the body is read.
        auto [ec, n] = co_await http::async_read_header(socket, buffer, parser, as_tuple);
        self->idle = false;
        response res;
        bool refused = false;  // answered from the head: the body is not read, so close
        if (!ec) {
            const auto verdict = check_head(parser.get(), limits_.max_body_bytes);
            if (verdict.refuse) {
                res = {verdict.refuse->status, error_json(verdict.refuse->message)};
                refused = true;
            } else {
                if (verdict.expect_continue && !over_limit) {
                    static constexpr std::string_view go_on = "HTTP/1.1 100 Continue\r\n\r\n";
                    auto [cec, cn] =
                        co_await asio::async_write(socket, asio::buffer(go_on), as_tuple);
                    ec = cec;
                }
                // The body often came with the head: parse what the buffer holds first, without
                // another read operation, and read only what is still missing.
                while (!ec && !parser.is_done() && buffer.size() > 0) {
                    boost::system::error_code pec;
                    const auto used = parser.put(buffer.data(), pec);
                    buffer.consume(used);
                    if (pec == http::error::need_more || (!pec && used == 0)) {
                        break;
                    }
                    ec = pec;
                }
                if (!ec && !parser.is_done()) {
                    auto [bec, bn] = co_await http::async_read(socket, buffer, parser, as_tuple);
                    ec = bec;
                }
            }
        }
        self->deadline = clock::time_point::max();
        if (ec == http::error::end_of_stream || self->timed_out ||
            (ec == asio::error::operation_aborted && stopping_)) {
            break;  // the client is done, too slow, or the server drains: close
        }
        bool close = refused;
        bool head_only = false;
        if (refused) {
            // answered from the head already
        } else if (ec == http::error::body_limit) {
            res = {
                http::status::payload_too_large,
                error_json("the request body is over the limit of " +
                           std::to_string(limits_.max_body_bytes) + " bytes (--max-body-bytes)")};
            close = refused = true;
        } else if (ec == http::error::header_limit) {
            // The request line alone past the limit: its target is too long (414).
            const std::string_view got(static_cast<const char*>(buffer.data().data()),
                                       buffer.size());
            const bool line_too_long = got.find("\r\n") == std::string_view::npos;
            res = {
                line_too_long ? http::status::uri_too_long
                              : http::status::request_header_fields_too_large,
                error_json(std::string(line_too_long ? "the request target"
                                                     : "the request's header fields") +
                           " are over the limit of " + std::to_string(max_head_bytes) + " bytes")};
            close = refused = true;
        } else if (ec) {
            if (ec != asio::error::eof && ec != asio::error::connection_reset &&
                ec != asio::error::operation_aborted) {
                res = {http::status::bad_request,
                       error_json("malformed HTTP request: " + ec.message())};
                close = refused = true;
            } else {
                break;
            }
        } else if (over_limit) {
            res = {http::status::service_unavailable,
                   error_json("too many connections (--max-connections " +
                              std::to_string(limits_.max_connections) + "); try again"),
                   {},
                   true};
            close = true;
        } else {
            auto req = parser.release();
            close = !req.keep_alive();
            head_only = req.method() == http::verb::head;
            std::optional<std::size_t> header_length;
            if (const auto h = req.find("Inference-Header-Content-Length"); h != req.end()) {
                std::size_t bytes = 0;
                const auto text = h->value();
                const auto [end, err] =
                    std::from_chars(text.data(), text.data() + text.size(), bytes);
                if (err == std::errc{} && end == text.data() + text.size()) {
                    header_length = bytes;
                } else {
                    header_length = std::numeric_limits<std::size_t>::max();  // refused below
                }
            }
            res = co_await route(std::string(head_only ? "GET" : req.method_string()),
                                 origin_form(req.target()), std::move(req.body()), header_length,
                                 socket);
        }
        // Every answer counts, in this one place, including those given before routing.
        metrics_.answered(res.model, static_cast<unsigned>(res.status));
        if (res.status == http::status{499}) {
            break;  // the client went away while its request ran: nobody to answer
        }
        http::response<http::string_body> out{res.status, 11};
        out.set(http::field::server, "torchpool-serve");
        out.set(http::field::content_type, res.content_type);
        if (!res.allow.empty()) {
            out.set(http::field::allow, res.allow);
        }
        if (res.retry_after) {
            out.set(http::field::retry_after, "1");
        }
        if (res.header_length) {
            out.set("Inference-Header-Content-Length", std::to_string(*res.header_length));
        }
        out.set(http::field::date, date_now());
        out.keep_alive(!close && !stopping_);
        out.body() = std::move(res.body);
        out.prepare_payload();
        read_or_write_from_now();
        boost::system::error_code wec;
        if (head_only) {
            // HEAD: the head a GET would get, Content-Length included, and no body.
            http::response_serializer<http::string_body> head(out);
            std::tie(wec, std::ignore) = co_await http::async_write_header(socket, head, as_tuple);
        } else {
            std::tie(wec, std::ignore) = co_await http::async_write(socket, out, as_tuple);
        }
        self->deadline = clock::time_point::max();
        if (!wec && refused) {
            // A staged close: the client may still be writing the body the server did not
            // read; closing now would reset the connection before it reads the answer. So
            // the server stops writing and reads what still comes, for a bounded time.
            boost::system::error_code ignored;
            socket.shutdown(tcp::socket::shutdown_send, ignored);
            self->deadline = clock::now() + std::min<clock::duration>(limits_.read_timeout,
                                                                      std::chrono::seconds(2));
            std::array<char, 16384> sink;
            for (std::size_t drained = 0; drained < (64u << 20);) {
                auto [dec, dn] = co_await socket.async_read_some(asio::buffer(sink), as_tuple);
                if (dec) {
                    break;  // the client's end, or the deadline
                }
                drained += dn;
            }
            break;
        }
        if (wec || !out.keep_alive()) {
            break;
        }
    }
    boost::system::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_send, ignored);
}

namespace {

// Watches a client while its request runs: once it closes its side of the connection, `gone`
// is emitted, which cancels the request. Data from the client first (a pipelined request)
// ends the watch: there is nothing to watch until the response.
struct client_watch : std::enable_shared_from_this<client_watch> {
    explicit client_watch(tcp::socket& s) : socket(s) {}

    void arm() {
        socket.async_wait(
            tcp::socket::wait_read, [self = shared_from_this()](boost::system::error_code ec) {
                if (ec || self->done) {
                    return;  // cancelled: the request ended first
                }
                char byte;
                const ssize_t n =
                    ::recv(self->socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                    self->client_left = true;
                    self->gone.emit(asio::cancellation_type::terminal);
                } else if (n < 0) {
                    self->arm();  // nothing after all
                }
            });
    }
    /// The request ended: the watch stops.
    void stop() {
        done = true;
        boost::system::error_code ignored;
        socket.cancel(ignored);
    }

    tcp::socket& socket;
    asio::cancellation_signal gone;
    bool client_left = false;
    bool done = false;
};

}  // namespace

asio::awaitable<http_server::response> http_server::route(const std::string& method,
                                                          std::string_view target, std::string body,
                                                          std::optional<std::size_t> header_length,
                                                          tcp::socket& client) {
    if (const auto q = target.find('?'); q != std::string_view::npos) {
        target = target.substr(0, q);
    }
    if (target.size() > 1 && target.back() == '/') {
        target.remove_suffix(1);  // "/v2/" is "/v2"
    }
    // HEAD arrives here as GET (the session sends the head only).
    const auto only = [&](std::string_view allowed) -> std::optional<response> {
        if (method == allowed) {
            return std::nullopt;
        }
        const std::string allow = allowed == "GET" ? "GET, HEAD" : std::string(allowed);
        return response{http::status::method_not_allowed,
                        error_json("use " + allow + " for " + std::string(target)), allow};
    };
    if (target == "/v2") {
        if (auto no = only("GET")) {
            co_return *no;
        }
        co_return response{http::status::ok, server_metadata_json()};
    }
    if (target == "/v2/health/live") {
        if (auto no = only("GET")) {
            co_return *no;
        }
        co_return response{http::status::ok, R"({"live":true})"};
    }
    if (target == "/v2/health/ready") {
        if (auto no = only("GET")) {
            co_return *no;
        }
        const bool r = ready();
        co_return response{r ? http::status::ok : http::status::service_unavailable,
                           r ? R"({"ready":true})" : R"({"ready":false})"};
    }
    if (target == "/metrics") {
        if (auto no = only("GET")) {
            co_return *no;
        }
        response res{http::status::ok, metrics_.scrape()};
        res.content_type = "text/plain; version=0.0.4";
        co_return res;
    }
    constexpr std::string_view models_prefix = "/v2/models/";
    if (!target.starts_with(models_prefix)) {
        co_return response{http::status::not_found,
                           error_json("no such endpoint: " + std::string(target))};
    }
    // {name}[/versions/{v}][/ready|/infer]
    std::string_view rest = target.substr(models_prefix.size());
    const auto slash = rest.find('/');
    const std::string_view name = rest.substr(0, slash);
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
    served_model* model = find(name);
    if (!model) {
        co_return response{http::status::not_found,
                           error_json("no model named '" + std::string(name) + "' is served")};
    }
    if (rest.starts_with("/versions/")) {
        rest.remove_prefix(std::string_view("/versions/").size());
        const auto end = rest.find('/');
        const std::string_view version = rest.substr(0, end);
        if (version != model->config.version) {
            co_return response{
                http::status::not_found,
                error_json("model '" + model->config.name + "' has no version '" +
                           std::string(version) + "'; it has version " + model->config.version)};
        }
        rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
    }
    if (rest.empty()) {
        if (auto no = only("GET")) {
            co_return *no;
        }
        co_return response{http::status::ok, model_metadata_json(model->config)};
    }
    if (rest == "/ready") {
        if (auto no = only("GET")) {
            co_return *no;
        }
        const bool r = !stopping_ && model->workers->health().ready;
        co_return response{r ? http::status::ok : http::status::service_unavailable,
                           model_ready_json(model->config, r)};
    }
    if (rest == "/infer") {
        if (auto no = only("POST")) {
            no->model = model->config.name;
            co_return *no;
        }
        const auto began = clock::now();
        response res = co_await infer(*model, std::move(body), header_length, client);
        if (res.status == http::status{499}) {
            std::fprintf(stderr,
                         "torchpool-serve: model '%s': a client went away before its answer; "
                         "its request was cancelled\n",
                         model->config.name.c_str());
        }
        res.model = model->config.name;
        metrics_.infer_latency(
            model->config.name,
            std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - began));
        co_return res;
    }
    co_return response{http::status::not_found,
                       error_json("no such endpoint: " + std::string(target))};
}

asio::awaitable<http_server::response> http_server::infer(served_model& model, std::string body,
                                                          std::optional<std::size_t> header_length,
                                                          tcp::socket& client) {
    auto parsed = parse_infer_request(body, model.config, header_length);
    if (auto* problem = std::get_if<http_error>(&parsed)) {
        co_return response{static_cast<http::status>(problem->status),
                           error_json(problem->message)};
    }
    auto& req = std::get<infer_request>(parsed);
    if (req.inject && !limits_.fault_injection) {
        co_return response{http::status::bad_request,
                           error_json("parameters.torchpool_fault asks for a fault, but this "
                                      "server was not started with --fault-injection")};
    }
    const auto watch = std::make_shared<client_watch>(client);
    watch->arm();
    auto result = co_await model.batches->async_infer(
        std::move(req.inputs), req.inject,
        asio::bind_cancellation_slot(watch->gone.slot(), asio::use_awaitable));
    watch->stop();
    if (watch->client_left) {
        // Its client went away: the request was cancelled (499, as nginx counts it).
        co_return response{http::status{499}, {}};
    }
    if (const auto ec = result.error) {
        const std::string& why = result.why;
        if (ec == errc::overloaded || ec == errc::spawn_failed || ec == errc::shutting_down) {
            co_return response{http::status::service_unavailable, error_json(why), {}, true};
        }
        if (ec == errc::timeout) {
            co_return response{http::status::gateway_timeout, error_json(why)};
        }
        co_return response{http::status::internal_server_error, error_json(why)};
    }
    auto encoded = infer_response(model.config, req, result.outputs, result.batch_rows);
    if (auto* problem = std::get_if<http_error>(&encoded)) {
        co_return response{static_cast<http::status>(problem->status),
                           error_json(problem->message)};
    }
    auto& out = std::get<encoded_response>(encoded);
    response res{http::status::ok, std::move(out.body)};
    if (out.header_length) {
        res.header_length = out.header_length;
        res.content_type = "application/octet-stream";
    }
    co_return res;
}

}  // namespace torchpool::serve
