#include "connections.hpp"

namespace torchpool::serve {

bool connection_registry::bytes_arrived(const boost::asio::ip::tcp::socket& s) {
    boost::system::error_code ec;
    return s.available(ec) > 0 || ec;
}

connection_registry::handle connection_registry::add(boost::asio::ip::tcp::socket socket) {
    waiting_.emplace_back(std::move(socket));
    open_.fetch_add(1, std::memory_order_relaxed);
    return std::prev(waiting_.end());
}

void connection_registry::remove(handle c) {
    if (c->cut) {
        cut_.fetch_sub(1, std::memory_order_relaxed);
    }
    auto& list = c->at == connection::stage::waiting ? waiting_ : busy_;
    list.erase(c);
    open_.fetch_sub(1, std::memory_order_relaxed);
    if (size() == 0 && on_empty_) {
        on_empty_();
    }
}

void connection_registry::enter(handle c, connection::stage s, clock::time_point deadline) {
    const bool was_waiting = c->at == connection::stage::waiting;
    const bool waits = s == connection::stage::waiting;
    if (waits) {
        // To the back: the front is the one that has waited longest.
        waiting_.splice(waiting_.end(), was_waiting ? waiting_ : busy_, c);
        c->waiting_since = clock::now();
    } else if (was_waiting) {
        busy_.splice(busy_.end(), waiting_, c);
    }
    c->at = s;
    c->deadline = deadline;
}

void connection_registry::cut(connection& c, cut_reason why) {
    if (c.cut) {
        return;
    }
    c.cut = true;
    cut_.fetch_add(1, std::memory_order_relaxed);
    cut_counts_[static_cast<std::size_t>(why)].fetch_add(1, std::memory_order_relaxed);
    boost::system::error_code ignored;
    c.socket.cancel(ignored);  // its read or write ends, and it closes
}

std::optional<connection::clock::time_point> connection_registry::longest_waiting() const {
    const auto* c = longest_waiting_evictable(waiting_);
    return c ? std::optional(c->waiting_since) : std::nullopt;
}

bool connection_registry::evict_longest_waiting() {
    auto* c = longest_waiting_evictable(waiting_);
    if (c) {
        cut(*c, cut_reason::evicted);
    }
    return c != nullptr;
}

std::size_t connection_registry::cut_overdue(clock::time_point now) {
    std::size_t n = 0;
    for (auto* list : {&waiting_, &busy_}) {
        for (auto& c : *list) {
            if (!c.cut && c.deadline <= now) {
                cut(c, cut_reason::deadline);
                ++n;
            }
        }
    }
    return n;
}

void connection_registry::cut_waiting() {
    for (auto& c : waiting_) {
        if (!bytes_arrived(c.socket)) {
            cut(c, cut_reason::drain);
        }
    }
}

void connection_registry::close_all() {
    for (auto* list : {&waiting_, &busy_}) {
        for (auto& c : *list) {
            boost::system::error_code ignored;
            c.socket.close(ignored);
        }
    }
}

}  // namespace torchpool::serve
