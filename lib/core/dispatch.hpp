// Dispatch: whether a new task is admitted, and which worker takes the next queued task. An
// idle worker first (the last to become idle, whose caches are warm); with prefetch, else a
// busy worker with room for one more, round robin so that tasks sent ahead spread evenly.
// The idle list is kept by the worker set's status hooks (worker_set::set_status), its only
// writer: a worker enters it when it becomes idle and leaves it when it stops being so.
#pragma once

#include "types.hpp"

#include <algorithm>
#include <cstddef>
#include <optional>
#include <vector>

namespace torchpool::core {

/// Whether a new task may wait for a worker, and if not, why.
enum class admission { admitted, shutting_down, degraded, queue_full };

/// Pure: a task is admitted unless the pool shuts down, no worker can be started, or the
/// queue is full.
constexpr admission admit(bool pool_admits, bool degraded, std::size_t queued,
                          std::size_t queue_limit) noexcept {
    if (!pool_admits) {
        return admission::shutting_down;
    }
    if (degraded) {
        return admission::degraded;
    }
    return queued >= queue_limit ? admission::queue_full : admission::admitted;
}

class dispatcher {
public:
    dispatcher(std::size_t slots, std::size_t prefetch) : slots_(slots), prefetch_(prefetch) {
        idle_.reserve(slots);
    }

    void became_idle(slot_id slot) { idle_.push_back(slot); }
    void not_idle(slot_id slot) {
        if (!idle_.empty() && idle_.back() == slot) {
            idle_.pop_back();  // the one pick() chose: the common case
            return;
        }
        idle_.erase(std::remove(idle_.begin(), idle_.end(), slot), idle_.end());
    }
    std::size_t idle_count() const noexcept { return idle_.size(); }

    /// The worker to send the next task to: an idle one (it stays on the list until it is
    /// told not_idle), else, with prefetch, a busy one with fewer than 1 + prefetch tasks
    /// sent. `busy_with(slot)` returns how many tasks a busy worker holds, or nullopt when it
    /// is not busy.
    template <class BusyWith>
    std::optional<slot_id> pick(BusyWith busy_with) {
        if (!idle_.empty()) {
            return idle_.back();
        }
        if (prefetch_ == 0) {
            return std::nullopt;
        }
        for (std::size_t i = 0; i < slots_; ++i) {
            const slot_id slot = (cursor_ + i) % slots_;
            const std::optional<std::size_t> held = busy_with(slot);
            if (held && *held <= prefetch_) {
                cursor_ = slot + 1;
                return slot;
            }
        }
        return std::nullopt;
    }

private:
    std::vector<slot_id> idle_;
    std::size_t slots_;
    std::size_t prefetch_;
    slot_id cursor_ = 0;
};

}  // namespace torchpool::core
