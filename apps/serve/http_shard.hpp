// One HTTP thread's share of the connections (--http-threads): the connections it serves, with
// their registry, its deadline timer and its Date cache, all used from that thread only, so
// that a connection's handlers never run concurrently and need no lock or strand. A shard runs
// its own io_context on a thread of its own, or, with no HTTP threads, the supervising one
// (where the pools and batchers are).
#pragma once

#include "connections.hpp"
#include "endpoints.hpp"
#include "http_limits.hpp"
#include "http_rules.hpp"
#include "metrics.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <thread>

namespace torchpool::serve {

class http_shard {
public:
    /// What every shard shares.
    struct shared {
        endpoints& app;
        server_metrics& metrics;
        const http_limits& limits;
    };

    /// A shard on a thread of its own, named `thread_name` (start() starts it), as top -H and
    /// perf show it (at most 15 characters).
    http_shard(shared s, std::string thread_name);
    /// A shard on `ex`, the supervising executor (no thread of its own).
    http_shard(shared s, boost::asio::any_io_executor ex);
    /// Stops its thread; connections still open are closed.
    ~http_shard();
    http_shard(const http_shard&) = delete;
    http_shard& operator=(const http_shard&) = delete;

    boost::asio::any_io_executor executor() const { return executor_; }
    /// Its connections' figures (readable from any thread).
    const connection_registry& registry() const noexcept { return registry_; }
    /// Runs its thread, if it has one.
    void start();

    // The rest on the shard's executor.

    /// Serves `socket` (opened on this shard's executor). `over_limit`: past the connection
    /// cap, its first request is answered 503.
    void admit(boost::asio::ip::tcp::socket socket, bool over_limit);
    /// Since when its connection that has waited longest for a request has waited.
    std::optional<connection::clock::time_point> longest_waiting() const {
        return registry_.longest_waiting();
    }
    /// Cuts the connection that has waited longest for a request; false if none is waiting.
    bool evict_longest_waiting() { return registry_.evict_longest_waiting(); }
    /// The drain: connections waiting for a request are closed, the others once their
    /// response is written. `drained` runs (on this shard) once none is left.
    void stop(std::function<void()> drained);
    /// Closes every connection now.
    void close_all() { registry_.close_all(); }

private:
    /// Cuts the connections past their deadline; runs while connections are open (a
    /// connection is cut between its deadline and an eighth of the shortest timeout after it).
    boost::asio::awaitable<void> enforce_deadlines();
    void connections_gone();

    using work_guard = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;

    shared shared_;
    // Declared before the io_context: the sessions it holds leave the registry when it is
    // destroyed.
    connection_registry registry_;
    date_cache dates_;
    bool stopping_ = false;
    std::function<void()> drained_;
    std::optional<boost::asio::io_context> own_;
    boost::asio::any_io_executor executor_;
    boost::asio::steady_timer deadline_timer_;
    bool enforcing_ = false;
    std::optional<work_guard> keep_running_;
    std::string thread_name_;
    std::thread thread_;
};

}  // namespace torchpool::serve
