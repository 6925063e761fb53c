// POST /v2/models/{model}/infer: the request parsed and checked against the model, run alone or
// in a batch, and its outputs written as JSON or binary tensors.
#include "endpoints.hpp"
#include "http_rules.hpp"
#include "oip.hpp"
#include "status_map.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <limits>
#include <memory>
#include <optional>

#include <sys/socket.h>

namespace torchpool::serve {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

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

// Inference-Header-Content-Length (Triton's binary tensor extension): the JSON header's length
// when binary data follows it. A value that is not a number is kept as the largest size, which
// the parser refuses with its own words.
std::optional<std::size_t> json_header_length(const http_request& req) {
    const auto h = req.find("Inference-Header-Content-Length");
    if (h == req.end()) {
        return std::nullopt;
    }
    std::size_t bytes = 0;
    const auto text = h->value();
    const auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), bytes);
    if (err != std::errc{} || end != text.data() + text.size()) {
        return std::numeric_limits<std::size_t>::max();
    }
    return bytes;
}

// batcher::async_infer for a caller on any executor: on `supervisor`'s own (HTTP on the
// supervising thread), a direct call; from another (an HTTP thread), it runs on `supervisor`,
// where the batcher lives, and completes on the caller's executor. Cancellation
// crosses too: the caller's slot posts the emission to the supervisor, onto a signal that both
// ends share, so an emission that races with the completion finds no handler there rather
// than freed memory. (Boost 1.81's co_spawn forwards cancellation by posting a raw pointer to
// a signal that its completion destroys: under load, clients that left crashed this server.)
template <class Token>
auto async_infer_on(asio::any_io_executor supervisor, batcher& batches, std::vector<tensor> inputs,
                    fault inject, Token&& token) {
    return asio::async_initiate<Token, void(batch_result)>(
        [supervisor, &batches](auto handler, std::vector<tensor> in, fault f) {
            if (asio::get_associated_executor(handler) == supervisor) {
                batches.async_infer(std::move(in), f, std::move(handler));
                return;
            }
            struct shared_signal {
                asio::cancellation_signal signal;
            };
            auto cancel = std::make_shared<shared_signal>();
            if (auto slot = asio::get_associated_cancellation_slot(handler); slot.is_connected()) {
                slot.assign([cancel, supervisor](asio::cancellation_type type) {
                    asio::post(supervisor, [cancel, type] { cancel->signal.emit(type); });
                });
            }
            // The caller's executor has work outstanding until the answer is back.
            auto home = asio::make_work_guard(asio::get_associated_executor(handler));
            auto done = [cancel, home = std::move(home),
                         handler = std::move(handler)](batch_result r) mutable {
                asio::post(home.get_executor(),
                           [handler = std::move(handler), r = std::move(r)]() mutable {
                               if (auto slot = asio::get_associated_cancellation_slot(handler);
                                   slot.is_connected()) {
                                   slot.clear();
                               }
                               std::move(handler)(std::move(r));
                           });
            };
            asio::post(supervisor,
                       [&batches, cancel, in = std::move(in), f, done = std::move(done)]() mutable {
                           batches.async_infer(std::move(in), f,
                                               asio::bind_cancellation_slot(cancel->signal.slot(),
                                                                            std::move(done)));
                       });
        },
        token, std::move(inputs), inject);
}

// Binary data of fewer bytes stays in the body's text: a block of input memory costs more
// than it saves there.
constexpr std::uint64_t place_binary_from = 1024;

reply refusal(const http_error& problem) {
    return {static_cast<http::status>(problem.status), error_json(problem.message)};
}

}  // namespace

void endpoints::place_binary(http_request& req, std::uint64_t content_length) {
    if (req.method() != http::verb::post) {
        return;
    }
    const auto json_bytes = json_header_length(req);
    if (!json_bytes || *json_bytes >= content_length ||
        content_length - *json_bytes < place_binary_from) {
        return;
    }
    const auto route = resolve(req.method_string(), origin_form(req.target()));
    const auto* path = std::get_if<route_match>(&route);
    if (!path || path->which != endpoint::model_infer) {
        return;
    }
    const auto found = model_of(*path);
    const auto* model = std::get_if<served_model*>(&found);
    if (!model) {
        return;
    }
    // Without room, the body is read as text, as any other.
    auto block = input_memory_of(*(*model)->workers)(
        dtype::uint8, {static_cast<std::int64_t>(content_length - *json_bytes)});
    if (block.shared) {
        req.body().binary = std::move(block.shared);
        req.body().text_bytes = *json_bytes;
    }
}

asio::awaitable<reply> endpoints::infer(served_model& model, http_request req,
                                        tcp::socket& client) {
    const auto began = std::chrono::steady_clock::now();
    request_placement placement{.memory = input_memory_of(*model.workers),
                                .binary = req.body().binary};
    auto parsed = parse_infer_request(req.body().text, model.config, json_header_length(req),
                                      json_reading::fast_when_possible,
                                      limits_.shared_memory ? &regions_ : nullptr, placement);
    req.body() = {};  // what the tensors need, they hold
    reply r;
    if (auto* problem = std::get_if<http_error>(&parsed)) {
        r = refusal(*problem);
    } else if (auto& request = std::get<infer_request>(parsed);
               request.inject && !limits_.fault_injection) {
        r = reply{http::status::bad_request,
                  error_json("parameters.torchpool_fault asks for a fault, but this server was "
                             "not started with --fault-injection")};
    } else {
        const auto watch = std::make_shared<client_watch>(client);
        watch->arm();
        // The batcher runs where the pool does; the request was parsed here, on this
        // connection's thread, and its answer is written here.
        auto result = co_await async_infer_on(
            supervisor_, *model.batches, std::move(request.inputs), request.inject,
            asio::bind_cancellation_slot(watch->gone.slot(), asio::use_awaitable));
        watch->stop();
        if (watch->client_left) {
            r = reply{client_closed_request, {}};
            std::fprintf(stderr,
                         "torchpool-serve: model '%s': a client went away before its answer; "
                         "its request was cancelled\n",
                         model.config.name.c_str());
        } else if (result.error) {
            const auto failed = status_of(result.error);
            r = reply{failed.status, error_json(result.why)};
            r.retry_after = failed.retry_after;
        } else {
            auto encoded = infer_response(model.config, request, result.outputs, result.batch_rows);
            if (auto* cannot = std::get_if<http_error>(&encoded)) {
                r = refusal(*cannot);
            } else {
                auto& out = std::get<encoded_response>(encoded);
                r = reply{http::status::ok, std::move(out.body)};
                r.attachments = std::move(out.attachments);
                if (out.header_length) {
                    r.header_length = out.header_length;
                    r.content_type = "application/octet-stream";
                }
            }
        }
    }
    r.model = model.config.name;
    metrics_.infer_latency(model.config.name, std::chrono::duration_cast<std::chrono::microseconds>(
                                                  std::chrono::steady_clock::now() - began));
    co_return r;
}

}  // namespace torchpool::serve
