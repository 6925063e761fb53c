// Accepts connections, keeps them in the registry, and enforces their deadlines and the
// connection cap: near the cap, the connection that has waited longest for a request is closed
// to make room; past it, a new connection is answered 503 and closed.
#pragma once

#include "connections.hpp"
#include "endpoints.hpp"
#include "http_limits.hpp"
#include "http_rules.hpp"
#include "metrics.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstddef>
#include <functional>

namespace torchpool::serve {

class listener {
public:
    listener(boost::asio::ip::tcp::acceptor& acceptor, endpoints& app, server_metrics& metrics,
             const http_limits& limits);

    /// Accepts connections until `stop()`.
    boost::asio::awaitable<void> run();
    /// The drain: no new connection is accepted, connections waiting for a request are closed,
    /// and the others close once their response is written.
    void stop();
    /// Closes every connection now (the drain took too long).
    void close_all() { registry_.close_all(); }
    /// `f` runs once no connection is left after stop().
    void when_drained(std::function<void()> f);
    std::size_t connections() const noexcept { return registry_.size(); }

private:
    void admit(boost::asio::ip::tcp::socket socket);
    /// Cuts the connections past their deadline; runs while connections are open (a connection
    /// is cut between its deadline and an eighth of the shortest timeout after it).
    boost::asio::awaitable<void> enforce_deadlines();
    void connections_gone();

    boost::asio::ip::tcp::acceptor& acceptor_;
    endpoints& app_;
    server_metrics& metrics_;
    const http_limits& limits_;
    connection_registry registry_;
    date_cache dates_;
    bool stopping_ = false;
    std::function<void()> drained_;
    boost::asio::steady_timer deadline_timer_;
    bool enforcing_ = false;
    boost::asio::steady_timer accept_pause_;
};

}  // namespace torchpool::serve
