// What the lag benches share: an executor that times every function it runs for the pool
// (how long the pool kept a thread of the host's io_context), the 1 ms heartbeat whose lag
// they measure, and quantiles.
#pragma once

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/require.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

namespace torchpool::bench {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

// How long each function the pool's executor ran took, in ms (under a mutex: the strand
// runs one at a time, but on any of the io_context's threads).
struct handler_times {
    std::mutex m;
    std::vector<double> ms;
    void add(clock_type::duration d) {
        std::lock_guard lock(m);
        ms.push_back(std::chrono::duration<double, std::milli>(d).count());
    }
};

// An executor that forwards everything to Inner and times what it executes.
template <typename Inner>
class timed_executor {
public:
    timed_executor(Inner inner, handler_times* times) : inner_(std::move(inner)), times_(times) {}

    template <typename Property>
    auto query(const Property& p) const -> decltype(asio::query(std::declval<const Inner&>(), p)) {
        return asio::query(inner_, p);
    }
    template <typename Property>
    auto require(const Property& p) const
        -> timed_executor<std::decay_t<decltype(asio::require(std::declval<const Inner&>(), p))>> {
        return {asio::require(inner_, p), times_};
    }
    template <typename Property>
    auto prefer(const Property& p) const
        -> timed_executor<std::decay_t<decltype(asio::prefer(std::declval<const Inner&>(), p))>> {
        return {asio::prefer(inner_, p), times_};
    }
    template <typename Function>
    void execute(Function&& f) const {
        inner_.execute([f = std::forward<Function>(f), times = times_]() mutable {
            const auto start = clock_type::now();
            std::move(f)();
            times->add(clock_type::now() - start);
        });
    }
    friend bool operator==(const timed_executor& a, const timed_executor& b) noexcept {
        return a.inner_ == b.inner_ && a.times_ == b.times_;
    }
    friend bool operator!=(const timed_executor& a, const timed_executor& b) noexcept {
        return !(a == b);
    }

private:
    template <typename>
    friend class timed_executor;
    Inner inner_;
    handler_times* times_;
};

// A 1 ms steady_timer on `ex` until `stop`: how late each tick ran, in ms, into `lags_ms`.
template <class Executor>
void start_heartbeat(const Executor& ex, const std::atomic<bool>& stop,
                     std::vector<double>& lags_ms) {
    using namespace std::chrono_literals;
    asio::co_spawn(
        ex,
        [&stop, &lags_ms, ex]() -> asio::awaitable<void> {
            asio::steady_timer timer(ex);
            auto next = clock_type::now();
            while (!stop) {
                next += 1ms;
                timer.expires_at(next);
                co_await timer.async_wait(asio::use_awaitable);
                lags_ms.push_back(
                    std::chrono::duration<double, std::milli>(clock_type::now() - next).count());
                next = std::max(next, clock_type::now());
            }
        },
        asio::detached);
}

// The q-quantile of sorted values (0 when there are none).
inline double quantile(const std::vector<double>& sorted, double q) {
    return sorted.empty() ? 0 : sorted[static_cast<std::size_t>(q * (sorted.size() - 1))];
}

}  // namespace torchpool::bench
