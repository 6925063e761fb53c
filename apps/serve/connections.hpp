// The server's open connections, as the drain, the deadlines and the connection cap see them.
// Each is in one stage of a request at a time, with a deadline for that stage; one timer for
// all of them cuts those past their deadline (rather than a timer armed and cancelled around
// every read and write).
#pragma once

#include "http_limits.hpp"

#include <boost/asio/ip/tcp.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <optional>

namespace torchpool::serve {

struct connection {
    using clock = http_limits::clock;
    enum class stage {
        waiting,   // for the first byte of a request (a new connection, or kept alive)
        head,      // reading a request's head
        body,      // reading its body
        handling,  // the request runs (the inference's own deadline applies)
        writing,   // writing the response
        closing,   // a staged close: reading what the client still sends, then closing
    };

    explicit connection(boost::asio::ip::tcp::socket s) : socket(std::move(s)) {}

    boost::asio::ip::tcp::socket socket;
    stage at = stage::waiting;
    bool kept_alive = false;  // has answered a request already
    clock::time_point deadline = clock::time_point::max();
    /// When it last began to wait for a request.
    clock::time_point waiting_since = clock::now();
    /// Cut by the server (past its deadline, evicted, or the drain): its operation in progress
    /// was cancelled, and the connection closes.
    bool cut = false;
};

/// Why the server closed a connection before its client did.
enum class cut_reason { deadline, evicted, drain };

/// One thread's connections: used from that thread only, except the figures (size, live,
/// cuts), which any thread may read.
class connection_registry {
public:
    using handle = std::list<connection>::iterator;
    using clock = connection::clock;

    /// A new connection, waiting for its first request.
    handle add(boost::asio::ip::tcp::socket socket);
    /// Closes `c` and forgets it; once none is left, `on_empty` runs.
    void remove(handle c);
    void on_empty(std::function<void()> f) { on_empty_ = std::move(f); }
    /// `c` enters stage `s` with `deadline`.
    void enter(handle c, connection::stage s, clock::time_point deadline);

    /// Connections open, and those open and not cut.
    std::size_t size() const noexcept { return open_.load(std::memory_order_relaxed); }
    std::size_t live() const noexcept { return size() - cut_.load(std::memory_order_relaxed); }
    /// Connections cut for `why` since the start.
    std::uint64_t cuts(cut_reason why) const noexcept {
        return cut_counts_[static_cast<std::size_t>(why)].load(std::memory_order_relaxed);
    }

    /// Since when the connection that has waited longest for a request (with no byte of one
    /// arrived) has waited; nullopt if none is waiting.
    std::optional<clock::time_point> longest_waiting() const;
    /// Cuts the connection that has waited longest for a request (unless bytes of one have
    /// arrived already); false if none is waiting.
    bool evict_longest_waiting();
    /// Cuts every connection past its deadline; how many.
    std::size_t cut_overdue(clock::time_point now);
    /// Cuts every connection waiting for a request with no byte of one arrived (the drain).
    void cut_waiting();
    /// Closes every socket now.
    void close_all();

private:
    void cut(connection& c, cut_reason why);
    /// Bytes of a request have arrived on `s` (or it failed).
    static bool bytes_arrived(const boost::asio::ip::tcp::socket& s);
    /// The connection of `waiting` (waiting_, const or not) that has waited longest for a
    /// request with no byte of one arrived; null if none.
    template <class List>
    static auto* longest_waiting_evictable(List& waiting) {
        for (auto& c : waiting) {
            if (!c.cut && !bytes_arrived(c.socket)) {
                return &c;
            }
        }
        return static_cast<decltype(&waiting.front())>(nullptr);
    }

    // Split by stage so that the one waiting longest is the front of `waiting_`: a
    // connection moves between them with splice, which keeps its handle valid.
    std::list<connection> waiting_;
    std::list<connection> busy_;
    // Written by the owning thread only; atomic for the readers of the figures.
    std::atomic<std::size_t> open_{0};
    std::atomic<std::size_t> cut_{0};
    std::array<std::atomic<std::uint64_t>, 3> cut_counts_{};
    std::function<void()> on_empty_;
};

}  // namespace torchpool::serve
