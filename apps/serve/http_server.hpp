// torchpool-serve's HTTP side: Boost.Beast HTTP/1.1 with keep-alive on the pools' own
// executor, routing the Open Inference Protocol's endpoints to the model pools.
#pragma once

#include "batcher.hpp"
#include "metrics.hpp"
#include "model_config.hpp"
#include <torchpool/pool.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

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

    /// Accepts connections until `stop()`; also enforces the read timeout of every connection.
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
    using clock = std::chrono::steady_clock;

    boost::asio::awaitable<void> session(boost::asio::ip::tcp::socket socket);
    /// `client`: the connection, watched while an inference runs (a client that goes away
    /// cancels its request).
    boost::asio::awaitable<response> route(const std::string& method, std::string_view target,
                                           std::string body,
                                           std::optional<std::size_t> header_length,
                                           boost::asio::ip::tcp::socket& client);
    /// `header_length`: Inference-Header-Content-Length (Triton's binary tensor extension).
    boost::asio::awaitable<response> infer(served_model& model, std::string body,
                                           std::optional<std::size_t> header_length,
                                           boost::asio::ip::tcp::socket& client);
    /// Closes the connections whose read or write has outlived its deadline; runs while
    /// connections are open (one timer for all, rather than a timer armed and cancelled around
    /// every read and write: a connection is cut between `read_timeout` and 1.125 times it).
    boost::asio::awaitable<void> enforce_deadlines();
    served_model* find(std::string_view name);
    /// The Date header's text, made anew once a second.
    const std::string& date_now();
    bool ready() const;

    // A connection, as the drain and the deadlines see it.
    struct session_state {
        boost::asio::ip::tcp::socket* socket = nullptr;
        bool idle = false;  // waiting for a request's first byte
        clock::time_point deadline = clock::time_point::max();  // of its read or write
        bool timed_out = false;
    };

    boost::asio::ip::tcp::acceptor& acceptor_;
    std::vector<served_model>& models_;
    server_metrics& metrics_;
    http_limits limits_;
    std::list<session_state> sessions_;
    std::function<void()> drained_;
    bool stopping_ = false;
    boost::asio::steady_timer deadline_timer_;
    bool enforcing_ = false;
    std::chrono::system_clock::time_point date_second_{};
    std::string date_text_;
};

}  // namespace torchpool::serve
