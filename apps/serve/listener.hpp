// Accepts connections and hands each to an HTTP shard (http_shard.hpp): the one with the
// fewest, each on its own thread with --http-threads. Enforces the connection cap across
// shards: near it, the connection that has waited longest for a request is closed to make
// room; past it, a new connection is answered 503 and closed. Runs on the supervising executor.
#pragma once

#include "endpoints.hpp"
#include "http_limits.hpp"
#include "http_shard.hpp"
#include "metrics.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

namespace torchpool::serve {

class listener {
public:
    /// Connections accepted on `acceptor` are served by `threads` HTTP threads, or, with 0, on
    /// the acceptor's own executor (the supervising one).
    listener(boost::asio::ip::tcp::acceptor& acceptor, endpoints& app, server_metrics& metrics,
             const http_limits& limits, std::size_t threads);

    /// Accepts connections until `stop()`.
    boost::asio::awaitable<void> run();
    /// The drain: no new connection is accepted, connections waiting for a request are closed,
    /// and the others close once their response is written.
    void stop();
    /// Closes every connection now (the drain took too long).
    void close_all();
    /// `f` runs (on the supervising executor) once no connection is left after stop().
    void when_drained(std::function<void()> f);

private:
    /// The shard to give a new connection: the one with the fewest.
    http_shard& least_busy();
    /// Makes room for a connection, on the shard with the most; false if none waits.
    boost::asio::awaitable<bool> evict_one();
    void shard_drained();

    boost::asio::ip::tcp::acceptor& acceptor_;
    endpoints& app_;
    const http_limits& limits_;
    std::vector<std::unique_ptr<http_shard>> shards_;
    bool stopping_ = false;
    /// Connections accepted and posted to their shard, not yet in its registry.
    std::atomic<std::size_t> in_transit_{0};
    std::size_t shards_running_ = 0;
    std::function<void()> drained_;
    boost::asio::steady_timer accept_pause_;
};

}  // namespace torchpool::serve
