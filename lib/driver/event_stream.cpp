#include "event_stream.hpp"

#include <boost/asio/error.hpp>

#include <string>

namespace torchpool::detail {

void event_stream::push(const worker_event& e) {
    if (!enabled()) {
        return;
    }
    if (waiting_ && buffer_.empty() && dropped_ == 0) {
        deliver({}, e);
        return;
    }
    if (buffer_.size() == capacity_) {
        buffer_.pop_front();
        ++dropped_;
        ++dropped_total_;
    }
    buffer_.push_back(e);
}

worker_event event_stream::take() {
    if (dropped_ > 0) {
        worker_event e{.what = worker_event::kind::events_dropped,
                       .description = std::to_string(dropped_) +
                                      " events were dropped before this one because they were "
                                      "not consumed in time (pool_params::event_buffer holds " +
                                      std::to_string(capacity_) + ")"};
        dropped_ = 0;
        return e;
    }
    worker_event e = std::move(buffer_.front());
    buffer_.pop_front();
    return e;
}

void event_stream::next(event_handler&& handler, std::uint64_t wait, bool finished) {
    namespace asio = boost::asio;
    if (!enabled()) {
        completion_.complete(std::move(handler),
                             boost::system::error_code(asio::error::operation_not_supported),
                             worker_event{});
        return;
    }
    if (waiting_) {
        completion_.complete(std::move(handler),
                             boost::system::error_code(asio::error::already_started),
                             worker_event{});
        return;
    }
    if (!buffer_.empty() || dropped_ > 0) {
        completion_.complete(std::move(handler), boost::system::error_code(), take());
        return;
    }
    if (finished) {
        completion_.complete(std::move(handler), boost::system::error_code(asio::error::eof),
                             worker_event{});
        return;
    }
    waiting_.emplace(std::move(handler));
    waiting_number_ = wait;
}

void event_stream::deliver(boost::system::error_code ec, worker_event e) {
    event_handler h(std::move(*waiting_));
    waiting_.reset();
    completion_.complete(std::move(h), ec, std::move(e));
}

void event_stream::cancel_wait(std::uint64_t wait) {
    if (waiting_ && waiting_number_ == wait) {
        deliver(boost::asio::error::operation_aborted, worker_event{});
    }
}

void event_stream::finish() {
    if (waiting_) {
        deliver(boost::asio::error::eof, worker_event{});
    }
}

}  // namespace torchpool::detail
