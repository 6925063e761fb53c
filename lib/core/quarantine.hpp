// The quarantine: fingerprints of poison tasks, so that one submitted again fails at once
// instead of costing more workers. Bounded; the oldest fingerprint is forgotten first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <unordered_set>

namespace torchpool::core {

class quarantine {
public:
    explicit quarantine(std::size_t capacity) : capacity_(capacity) {}

    bool enabled() const noexcept { return capacity_ > 0; }
    bool empty() const noexcept { return order_.empty(); }
    bool holds(std::uint64_t fingerprint) const {
        return fingerprint != 0 && known_.contains(fingerprint);
    }
    void add(std::uint64_t fingerprint) {
        if (!enabled() || fingerprint == 0 || !known_.insert(fingerprint).second) {
            return;
        }
        order_.push_back(fingerprint);
        if (order_.size() > capacity_) {
            known_.erase(order_.front());
            order_.pop_front();
        }
    }

private:
    std::size_t capacity_;
    std::deque<std::uint64_t> order_;  // oldest first
    std::unordered_set<std::uint64_t> known_;
};

}  // namespace torchpool::core
