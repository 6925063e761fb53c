// One HTTP/1.1 connection: requests read (the head first, checked against HTTP's rules, then
// the body), answered by the endpoints, and written, kept alive between requests. Each stage
// has its deadline (http_limits.hpp), which the listener's timer enforces.
#pragma once

#include "connections.hpp"
#include "endpoints.hpp"
#include "http_limits.hpp"
#include "http_rules.hpp"
#include "metrics.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

namespace torchpool::serve {

/// What a session shares with the others.
struct session_context {
    const http_limits& limits;
    endpoints& app;
    server_metrics& metrics;
    connection_registry& registry;
    date_cache& dates;
    /// The drain began: a connection closes after its response.
    const bool& stopping;
};

/// Serves the connection `self` until it closes; it then leaves the registry.
/// `over_limit`: past the connection cap, its first request is answered 503 and it closes.
boost::asio::awaitable<void> serve_connection(connection_registry::handle self,
                                              session_context context, bool over_limit);

}  // namespace torchpool::serve
