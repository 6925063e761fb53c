// Heartbeats to idle workers: a worker that has been idle for `interval` is sent a
// heartbeat, which the worker SDK answers at once; one that has not answered within
// `timeout` is unresponsive (stopped, deadlocked, stuck in the kernel) and is replaced before
// any task is sent to it: while its heartbeat is outstanding, it takes no task. Busy workers
// are not sent heartbeats; their tasks' deadlines cover them. Only workers that said in
// their hello that they answer heartbeats are sent any.
//
// One sweep over the workers every half of the shorter of interval and timeout decides, so
// that answering a task costs one store (`active`), not a timer.
#pragma once

#include "types.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

namespace torchpool::core {

class heartbeat_monitor {
public:
    heartbeat_monitor(std::size_t slots, std::chrono::milliseconds interval,
                      std::chrono::milliseconds timeout);

    bool enabled() const noexcept { return interval_.count() > 0; }

    /// The worker of `slot` became ready at `now`; `answers`: it said it answers heartbeats.
    void ready(slot_id slot, bool answers, time_point now);
    /// It did something (answered a task) at `now`: it is not idle since before.
    void active(slot_id slot, time_point now) { workers_[slot].last_active = now; }
    /// Its process is gone.
    void gone(slot_id slot) { workers_[slot] = {}; }
    /// It answered heartbeat `sequence`. True if that was the one outstanding (it may take
    /// tasks again).
    bool answered(slot_id slot, std::uint64_t sequence, time_point now);
    /// A heartbeat is outstanding.
    bool waiting(slot_id slot) const { return workers_[slot].sent_at.has_value(); }

    /// When `sweep` is due, if heartbeats are on and the pool started.
    std::optional<time_point> next_sweep() const noexcept { return next_sweep_; }
    void start(time_point now);
    void stop() noexcept { next_sweep_.reset(); }

    struct ping {
        slot_id slot;
        std::uint64_t sequence;
    };
    struct sweep_result {
        std::vector<ping> pings;            ///< send these; those workers take no task now
        std::vector<slot_id> unresponsive;  ///< past the timeout: replace them
    };
    /// Decides who is sent a heartbeat and who is unresponsive. `is_idle(slot)`: the worker
    /// is ready and runs no task.
    template <class IsIdle>
    sweep_result sweep(time_point now, IsIdle is_idle);

    std::chrono::milliseconds timeout() const noexcept { return timeout_; }

private:
    struct worker {
        bool answers = false;
        time_point last_active{};
        std::optional<time_point> sent_at;
        std::uint64_t sequence = 0;
    };
    std::vector<worker> workers_;
    std::chrono::milliseconds interval_;
    std::chrono::milliseconds timeout_;
    clock::duration period_;
    std::optional<time_point> next_sweep_;
    std::uint64_t next_sequence_ = 1;
};

template <class IsIdle>
heartbeat_monitor::sweep_result heartbeat_monitor::sweep(time_point now, IsIdle is_idle) {
    sweep_result out;
    for (slot_id s = 0; s < workers_.size(); ++s) {
        auto& w = workers_[s];
        if (!w.answers) {
            continue;
        }
        if (w.sent_at) {
            if (now - *w.sent_at >= timeout_) {
                out.unresponsive.push_back(s);
                w.sent_at.reset();  // decided once
                w.answers = false;
            }
        } else if (now - w.last_active >= interval_ && is_idle(s)) {
            w.sent_at = now;
            w.sequence = next_sequence_++;
            out.pings.push_back({s, w.sequence});
        }
    }
    next_sweep_ = now + period_;
    return out;
}

}  // namespace torchpool::core
