// The pool's event stream (pool::async_next_event): a bounded buffer of worker events and at
// most one consumer waiting for the next. Runs on the pool's executor. When the consumer is
// slow, the oldest events are dropped and counted, and the consumer learns how many from an
// `events_dropped` event in their place, so memory stays bounded whatever the consumer does.
#pragma once

#include "completion.hpp"
#include <torchpool/events.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>

namespace torchpool::detail {

using event_handler =
    boost::asio::any_completion_handler<void(boost::system::error_code, worker_event)>;

class event_stream {
public:
    event_stream(std::size_t capacity, completion_context& completion)
        : capacity_(capacity), completion_(completion) {}

    bool enabled() const noexcept { return capacity_ > 0; }
    /// Events dropped so far.
    std::uint64_t dropped() const noexcept { return dropped_total_; }

    /// An event happened.
    void push(const worker_event& e);
    /// A consumer wants the next event; `wait` numbers the call. `finished`: the pool has
    /// stopped for good, so no event will follow the ones buffered.
    void next(event_handler&& handler, std::uint64_t wait, bool finished);
    /// The consumer's call `wait` was cancelled (nothing happens if it has completed: the
    /// cancellation came after, and must not abort a later call).
    void cancel_wait(std::uint64_t wait);
    /// The pool has stopped for good: a waiting consumer learns the stream has ended.
    void finish();

private:
    // The next event to hand out: the count of dropped events first, if any.
    worker_event take();
    void deliver(boost::system::error_code ec, worker_event e);

    std::size_t capacity_;
    completion_context& completion_;
    std::deque<worker_event> buffer_;
    std::uint64_t dropped_ = 0;  // since the consumer last heard
    std::uint64_t dropped_total_ = 0;
    // Optional: see pool_impl's run handler (any_completion_handler's move assignment).
    std::optional<event_handler> waiting_;
    std::uint64_t waiting_number_ = 0;
};

}  // namespace torchpool::detail
