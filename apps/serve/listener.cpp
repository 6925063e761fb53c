#include "listener.hpp"

#include "session.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace torchpool::serve {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using clock = connection::clock;

namespace {

constexpr auto as_tuple = asio::as_tuple(asio::use_awaitable);

// Out of descriptors or memory for a new connection: the next accept may succeed once one
// closes.
bool out_of_room(const boost::system::error_code& ec) {
    return ec == boost::system::errc::too_many_files_open ||
           ec == boost::system::errc::too_many_files_open_in_system ||
           ec == boost::system::errc::no_buffer_space ||
           ec == boost::system::errc::not_enough_memory;
}

}  // namespace

listener::listener(tcp::acceptor& acceptor, endpoints& app, server_metrics& metrics,
                   const http_limits& limits)
    : acceptor_(acceptor),
      app_(app),
      metrics_(metrics),
      limits_(limits),
      deadline_timer_(acceptor.get_executor()),
      accept_pause_(acceptor.get_executor()) {
    registry_.on_empty([this] { connections_gone(); });
    metrics_.connections_from([this] {
        return connection_figures{.open = registry_.size(),
                                  .past_deadline = registry_.cuts(cut_reason::deadline),
                                  .evicted = registry_.cuts(cut_reason::evicted),
                                  .drained = registry_.cuts(cut_reason::drain)};
    });
}

asio::awaitable<void> listener::run() {
    while (!stopping_) {
        auto [ec, socket] = co_await acceptor_.async_accept(as_tuple);
        if (stopping_ || ec == asio::error::operation_aborted) {
            break;
        }
        if (ec && out_of_room(ec)) {
            // The connection stays in the backlog. Room is made by closing the connection that
            // has waited longest for a request; failing that, accepting pauses a moment
            // rather than spinning on the same error.
            if (!registry_.evict_longest_waiting()) {
                std::fprintf(stderr,
                             "torchpool-serve: cannot accept a connection: %s; pausing accepts "
                             "for 50 ms\n",
                             ec.message().c_str());
                accept_pause_.expires_after(std::chrono::milliseconds(50));
                co_await accept_pause_.async_wait(as_tuple);
            }
            continue;
        }
        if (!ec) {
            admit(std::move(socket));
        }
    }
}

void listener::admit(tcp::socket socket) {
    // Responses go out at once: with Nagle's algorithm a response written in two segments
    // waits for the client's delayed acknowledgement of the first (up to 40 ms).
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    // Near the cap (the last sixteenth), the connection that has waited longest for a request
    // makes room: an idle keep-alive connection costs its client a reconnect at most.
    const auto cap = limits_.max_connections;
    if (registry_.live() >= cap - cap / 16) {
        registry_.evict_longest_waiting();
    }
    const bool over_limit = registry_.live() >= cap;
    const auto self = registry_.add(std::move(socket));
    if (!enforcing_) {
        enforcing_ = true;
        asio::co_spawn(acceptor_.get_executor(), enforce_deadlines(), asio::detached);
    }
    const session_context context{limits_, app_, metrics_, registry_, dates_, stopping_};
    asio::co_spawn(acceptor_.get_executor(), serve_connection(self, context, over_limit),
                   asio::detached);
}

asio::awaitable<void> listener::enforce_deadlines() {
    using namespace std::chrono_literals;
    const auto shortest = std::min(limits_.header_timeout, limits_.idle_timeout);
    const auto period = std::clamp<clock::duration>(shortest / 8, 1ms, 250ms);
    while (registry_.size() > 0) {
        deadline_timer_.expires_after(period);
        co_await deadline_timer_.async_wait(as_tuple);
        registry_.cut_overdue(clock::now());
    }
    enforcing_ = false;
}

void listener::stop() {
    if (stopping_) {
        return;
    }
    stopping_ = true;
    app_.draining();
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    accept_pause_.cancel();
    registry_.cut_waiting();  // their read ends; a busy one closes after its response
    if (registry_.size() == 0) {
        connections_gone();
    }
}

void listener::when_drained(std::function<void()> f) {
    drained_ = std::move(f);
}

void listener::connections_gone() {
    deadline_timer_.cancel();  // nothing to watch: its loop ends now
    if (stopping_ && drained_) {
        std::exchange(drained_, {})();
    }
}

}  // namespace torchpool::serve
