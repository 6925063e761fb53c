// Start admission: which worker slots may start a process now. Slots wait for their turn in
// the order they asked; no more than `limit` starts are in progress at once (0: no limit),
// so that a burst of starts (hundreds of workers, a wave of restarts) does not overload the
// machine or the fork server. Pure bookkeeping: the pool says when a start begins and ends.
#pragma once

#include "types.hpp"

#include <cstddef>
#include <deque>
#include <optional>
#include <vector>

namespace torchpool::core {

class start_gate {
public:
    start_gate(std::size_t slots, std::size_t limit) : waiting_(slots, false), limit_(limit) {}

    /// `slot` waits for its turn (once, however often it asks).
    void enqueue(slot_id slot);
    /// `slot` no longer waits (its turn, if it comes, is skipped).
    void withdraw(slot_id slot) {
        if (waiting_[slot]) {
            waiting_[slot] = false;
            --waiting_count_;
        }
    }
    /// Slots waiting for their turn.
    std::size_t waiting_count() const noexcept { return waiting_count_; }
    bool waiting(slot_id slot) const { return waiting_[slot]; }
    bool anyone_waiting() const noexcept { return !queue_.empty(); }

    /// A start began or ended (told by the pool when a slot enters or leaves `starting`).
    void start_began() noexcept { ++in_progress_; }
    void start_ended() noexcept { --in_progress_; }
    std::size_t in_progress() const noexcept { return in_progress_; }

    /// The next slot whose turn it is, if the limit allows a start now; it no longer waits.
    std::optional<slot_id> next();

private:
    std::deque<slot_id> queue_;  // may hold slots that were withdrawn; skipped
    std::vector<bool> waiting_;
    std::size_t limit_;
    std::size_t in_progress_ = 0;
    std::size_t waiting_count_ = 0;
};

}  // namespace torchpool::core
