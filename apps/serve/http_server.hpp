// torchpool-serve's HTTP side: Boost.Beast HTTP/1.1 with keep-alive on the pools' own
// executor, routing the Open Inference Protocol's endpoints to the model pools.
#pragma once

#include "batcher.hpp"
#include "metrics.hpp"
#include "model_config.hpp"
#include <torchpool/pool.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace torchpool::serve {

struct served_model {
    model_config config;
    std::unique_ptr<pool> workers;
    std::unique_ptr<batcher> batches;
};

struct http_limits {
    std::size_t max_body_bytes = 16u << 20;
    std::size_t max_connections = 256;
    /// A request must arrive whole within this, or the connection is closed (slow clients).
    std::chrono::milliseconds read_timeout{10'000};
    /// Deadline of an inference task (queue wait included).
    std::chrono::milliseconds request_timeout{30'000};
    /// parameters.torchpool_fault is honoured (tests only; the pools must allow faults).
    bool fault_injection = false;
};

class http_server {
public:
    http_server(boost::asio::ip::tcp::acceptor& acceptor, std::vector<served_model>& models,
                server_metrics& metrics, http_limits limits);

    /// Accepts connections until `stop()`.
    boost::asio::awaitable<void> run();
    /// The drain: readiness turns false, no new connection is accepted, connections waiting
    /// for a request are closed, and the others are closed once their response is written.
    void stop();
    /// Closes every connection now (the drain took too long).
    void close_all();
    /// `f` runs once no connection is left after stop().
    void when_drained(std::function<void()> f) { drained_ = std::move(f); }
    bool stopping() const noexcept { return stopping_; }
    std::size_t connections() const noexcept { return sessions_.size(); }

private:
    struct response;
    boost::asio::awaitable<void> session(boost::asio::ip::tcp::socket socket);
    /// `client`: the connection, watched while an inference runs (a client that goes away
    /// cancels its request).
    boost::asio::awaitable<response> route(const std::string& method, std::string_view target,
                                           std::string body,
                                           std::optional<std::size_t> header_length,
                                           boost::beast::tcp_stream& client);
    /// `header_length`: Inference-Header-Content-Length (Triton's binary tensor extension).
    boost::asio::awaitable<response> infer(served_model& model, std::string body,
                                           std::optional<std::size_t> header_length);
    served_model* find(std::string_view name);
    bool ready() const;

    // A connection, as the drain sees it: idle while it waits for a request's first byte.
    struct session_state {
        boost::beast::tcp_stream* stream = nullptr;
        bool idle = false;
    };

    boost::asio::ip::tcp::acceptor& acceptor_;
    std::vector<served_model>& models_;
    server_metrics& metrics_;
    http_limits limits_;
    std::list<session_state> sessions_;
    std::function<void()> drained_;
    bool stopping_ = false;
};

}  // namespace torchpool::serve
