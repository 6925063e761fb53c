#include "listener.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cstdio>
#include <string>

namespace torchpool::serve {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

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
                   const http_limits& limits, std::size_t threads)
    : acceptor_(acceptor), app_(app), limits_(limits), accept_pause_(acceptor.get_executor()) {
    const http_shard::shared common{app, metrics, limits};
    if (threads == 0) {
        shards_.push_back(std::make_unique<http_shard>(common, acceptor.get_executor()));
    }
    for (std::size_t i = 0; i < threads; ++i) {
        shards_.push_back(
            std::make_unique<http_shard>(common, "tp-serve-http" + std::to_string(i)));
        shards_.back()->start();
    }
    shards_running_ = shards_.size();
    metrics.connections_from([this] {
        connection_figures f;
        for (const auto& s : shards_) {
            const auto& r = s->registry();
            f.open += r.size();
            f.past_deadline += r.cuts(cut_reason::deadline);
            f.evicted += r.cuts(cut_reason::evicted);
            f.drained += r.cuts(cut_reason::drain);
        }
        return f;
    });
}

http_shard& listener::least_busy() {
    return **std::min_element(shards_.begin(), shards_.end(), [](const auto& a, const auto& b) {
        return a->registry().size() < b->registry().size();
    });
}

asio::awaitable<bool> listener::evict_one() {
    // The connection that has waited longest on any shard: each shard is asked on its own
    // thread (near the cap only, so a round trip per shard is cheap enough).
    using when = std::optional<connection::clock::time_point>;
    http_shard* oldest = nullptr;
    when since;
    for (auto& s : shards_) {
        auto* shard = s.get();
        const when w = co_await asio::co_spawn(
            shard->executor(),
            [shard]() -> asio::awaitable<when> { co_return shard->longest_waiting(); },
            asio::use_awaitable);
        if (w && (!since || *w < *since)) {
            since = w;
            oldest = shard;
        }
    }
    if (!oldest) {
        co_return false;
    }
    co_return co_await asio::co_spawn(
        oldest->executor(),
        [oldest]() -> asio::awaitable<bool> { co_return oldest->evict_longest_waiting(); },
        asio::use_awaitable);
}

asio::awaitable<void> listener::run() {
    while (!stopping_) {
        auto& shard = least_busy();
        auto [ec, socket] = co_await acceptor_.async_accept(shard.executor(), as_tuple);
        if (stopping_ || ec == asio::error::operation_aborted) {
            break;
        }
        if (ec && out_of_room(ec)) {
            // The connection stays in the backlog. Room is made by closing the connection that
            // has waited longest for a request; failing that, accepting pauses a moment
            // rather than spinning on the same error.
            if (!co_await evict_one()) {
                std::fprintf(stderr,
                             "torchpool-serve: cannot accept a connection: %s; pausing accepts "
                             "for 50 ms\n",
                             ec.message().c_str());
                accept_pause_.expires_after(std::chrono::milliseconds(50));
                co_await accept_pause_.async_wait(as_tuple);
            }
            continue;
        }
        if (ec) {
            continue;
        }
        // Near the cap (the last sixteenth), the connection that has waited longest for a
        // request makes room: an idle keep-alive connection costs its client a reconnect at
        // most.
        const auto cap = limits_.max_connections;
        std::size_t live = in_transit_.load();
        for (const auto& s : shards_) {
            live += s->registry().live();
        }
        if (live >= cap - cap / 16 && co_await evict_one()) {
            --live;
        }
        const bool over_limit = live >= cap;
        // Counted until its shard has it, so that the next accept sees it.
        in_transit_.fetch_add(1);
        asio::post(shard.executor(), [this, &shard, s = std::move(socket), over_limit]() mutable {
            shard.admit(std::move(s), over_limit);
            in_transit_.fetch_sub(1);
        });
    }
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
    for (auto& s : shards_) {
        asio::post(s->executor(), [this, shard = s.get()] {
            shard->stop(
                [this] { asio::post(acceptor_.get_executor(), [this] { shard_drained(); }); });
        });
    }
}

void listener::close_all() {
    for (auto& s : shards_) {
        asio::post(s->executor(), [shard = s.get()] { shard->close_all(); });
    }
}

void listener::when_drained(std::function<void()> f) {
    drained_ = std::move(f);
}

void listener::shard_drained() {
    if (--shards_running_ == 0 && drained_) {
        std::exchange(drained_, {})();
    }
}

}  // namespace torchpool::serve
