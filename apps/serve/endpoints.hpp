// One handler per endpoint of the route table (routes.hpp), over the served models: the
// server's metadata and health, /metrics, a model's metadata and readiness, infer, and the
// shared-memory regions clients register (Triton's system shared-memory extension).
#pragma once

#include "http_limits.hpp"
#include "metrics.hpp"
#include "reply.hpp"
#include "request_body.hpp"
#include "routes.hpp"
#include "served_model.hpp"
#include "shm_regions.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/message.hpp>

#include <atomic>
#include <variant>
#include <vector>

namespace torchpool::serve {

using http_request = boost::beast::http::request<request_body>;

/// Called by the sessions of every HTTP thread at once. What only the supervising executor
/// may touch (the batchers, the pools' stats) runs there: `supervisor`, the executor of the
/// models' pools.
class endpoints {
public:
    endpoints(std::vector<served_model>& models, server_metrics& metrics, const http_limits& limits,
              boost::asio::any_io_executor supervisor)
        : models_(models), metrics_(metrics), limits_(limits), supervisor_(std::move(supervisor)) {}

    /// The answer to `req` (HEAD is answered as GET; the session writes the head only).
    /// `client`: its connection, watched while an inference runs (a client that goes away
    /// cancels its request: 499, and nothing is written).
    boost::asio::awaitable<reply> answer(http_request req, boost::asio::ip::tcp::socket& client);

    /// Before the body of `req` (its head, checked) is read, `content_length` bytes: an infer
    /// request with binary data (Inference-Header-Content-Length) of at least
    /// `place_binary_from` bytes gets a block of its model's input memory for that data, which
    /// the session reads straight into (request_body).
    void place_binary(http_request& req, std::uint64_t content_length);

    /// The drain began: readiness answers 503 from now on.
    void draining() noexcept { draining_ = true; }

private:
    reply server_metadata() const;
    reply server_live() const;
    reply server_ready() const;
    reply metrics() const;  // on the supervising executor
    reply model_metadata(const served_model& m) const;
    reply model_ready(const served_model& m) const;
    // Triton's system shared-memory extension (shm_endpoints.cpp).
    reply shm_status(const route_match& path) const;
    reply shm_register(const route_match& path, const http_request& req);
    reply shm_unregister(const route_match& path);
    boost::asio::awaitable<reply> infer(served_model& m, http_request req,
                                        boost::asio::ip::tcp::socket& client);  // infer.cpp

    /// The served model a path names (its version too, when it names one), or the 404.
    std::variant<served_model*, reply> model_of(const route_match& path);

    std::vector<served_model>& models_;
    server_metrics& metrics_;
    const http_limits& limits_;
    boost::asio::any_io_executor supervisor_;
    shm_regions regions_;  // registered by clients, named by their infer requests
    std::atomic<bool> draining_{false};
};

}  // namespace torchpool::serve
