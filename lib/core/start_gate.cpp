#include "start_gate.hpp"

namespace torchpool::core {

void start_gate::enqueue(slot_id slot) {
    if (!waiting_[slot]) {
        waiting_[slot] = true;
        ++waiting_count_;
        queue_.push_back(slot);
    }
}

std::optional<slot_id> start_gate::next() {
    while (!queue_.empty() && (limit_ == 0 || in_progress_ < limit_)) {
        const slot_id slot = queue_.front();
        queue_.pop_front();
        if (waiting_[slot]) {
            waiting_[slot] = false;
            --waiting_count_;
            return slot;
        }
    }
    return std::nullopt;
}

}  // namespace torchpool::core
