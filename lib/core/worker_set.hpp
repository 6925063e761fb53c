// The pool's worker slots, each with one status, and what the pool derives from them, kept
// right in one place. A slot's status changes only in set_status (below), from its process's
// transitions (this is the workers' observer) and from its work (a task sent, its last task
// answered, a heartbeat sent and answered); its enter and exit hooks keep the idle list, the
// start gate's queue and count of starts in progress, and the counts by status. Timer changes
// keep the index of worker timers. It decides nothing.
#pragma once

#include "dispatch.hpp"
#include "load_progress.hpp"
#include "start_gate.hpp"
#include "supervised_child.hpp"
#include "types.hpp"
#include <torchpool/pool_params.hpp>
#include <torchpool/stats.hpp>
#include <torchpool/task.hpp>

#include <array>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace torchpool::core {

/// A worker slot's state, as the pool reports it.
enum class worker_state {
    backoff,   ///< no process; waiting until its restart time (or until the pool starts)
    starting,  ///< process started, not ready (no hello yet)
    idle,      ///< ready, no task
    busy,      ///< running one task
    stopping,  ///< asked or forced to exit; waiting for the exit to be reaped
    stopped,   ///< no process, and none will be started (the pool is stopping)
};

const char* to_string(worker_state s) noexcept;

/// A worker slot's status, finer than its public worker_state: the one state the pool keeps
/// for a slot.
enum class worker_status : std::uint8_t {
    backoff,   ///< no process; its restart time has not come
    waiting,   ///< no process; waits for its turn to start (the start gate)
    starting,  ///< being started (asked of the fork server, or loading); not ready
    idle,      ///< ready, no task: on the idle list
    busy,      ///< ready, running a task (and maybe holding more sent ahead)
    probing,   ///< ready, no task, sent a heartbeat: no task until it answers
    stopping,  ///< asked or forced to exit; its exit has not been reaped
    stopped,   ///< no process, and none will be started
};
inline constexpr std::size_t worker_statuses = 8;

const char* to_string(worker_status s) noexcept;

class worker_set final : private supervised_child::observer {
public:
    struct worker {
        worker(slot_id slot, std::size_t log_bytes, std::size_t load_extensions,
               supervised_child::observer* observer)
            : child(slot, log_bytes, observer), load(load_extensions) {}
        supervised_child child;
        time_point task_start{};                    // when its running task started
        std::optional<std::string> channel_closed;  // how its channel ended, if it has
        load_progress load;                         // more time while it loads, if it computes
    };

    explicit worker_set(const pool_params& params);
    // Its workers point back to it.
    worker_set(const worker_set&) = delete;
    worker_set& operator=(const worker_set&) = delete;

    std::size_t size() const noexcept { return workers_.size(); }
    worker& operator[](slot_id slot) { return workers_[slot]; }
    const worker& operator[](slot_id slot) const { return workers_[slot]; }
    const worker& at(slot_id slot) const { return workers_.at(slot); }
    worker_status status(slot_id slot) const { return status_[slot]; }
    /// What the pool reports of the slot (pool::state_of, stats).
    worker_state state_of(slot_id slot) const;

    // The transitions of a ready worker's work (its process's come from its child).

    /// Waits for its turn to start; its process is gone (or never was).
    void wait_for_start(slot_id slot) {
        workers_[slot].child.wait_for_turn();
        set_status(slot, worker_status::waiting);
    }
    /// It was sent a task: busy (if it was not already, with tasks sent ahead).
    void task_sent(slot_id slot) { set_status(slot, worker_status::busy); }
    /// It answered the last task it held: idle.
    void all_answered(slot_id slot) {
        if (status_[slot] == worker_status::busy) {
            set_status(slot, worker_status::idle);
        }
    }
    /// It was sent a heartbeat while idle: it takes no task until it answers.
    void probe(slot_id slot) { set_status(slot, worker_status::probing); }
    /// It answered its heartbeat: idle again.
    void probe_answered(slot_id slot) {
        if (status_[slot] == worker_status::probing) {
            set_status(slot, worker_status::idle);
        }
    }

    /// The worker to send the next task to (see dispatcher::pick); it leaves the idle list
    /// when it is sent the task (task_sent). `held(slot)`: how many tasks a busy worker holds.
    template <class Held>
    std::optional<slot_id> pick(Held held) {
        return dispatch_.pick([&](slot_id s) -> std::optional<std::size_t> {
            if (status_[s] != worker_status::busy) {
                return std::nullopt;
            }
            return held(s);
        });
    }

    const start_gate& gate() const noexcept { return gate_; }
    /// Slots on the idle list (for tests: always count(worker_status::idle)).
    std::size_t idle_listed() const noexcept { return dispatch_.idle_count(); }
    /// The next slot whose turn to start has come (it leaves the gate's queue).
    std::optional<slot_id> next_to_start() { return gate_.next(); }
    std::size_t count(worker_status s) const noexcept {
        return counts_[static_cast<std::size_t>(s)];
    }
    /// Some worker is ready (idle, busy or probing).
    bool any_ready() const noexcept { return ready_count() > 0; }
    std::size_t ready_count() const noexcept {
        return count(worker_status::idle) + count(worker_status::busy) +
               count(worker_status::probing);
    }
    bool all_stopped() const noexcept { return count(worker_status::stopped) == workers_.size(); }

    /// The first worker timer, if any is set.
    std::optional<time_point> next_timer() const {
        if (timers_.empty()) {
            return std::nullopt;
        }
        return timers_.begin()->first;
    }
    /// Workers whose timer is due at `now`, in time order.
    std::vector<slot_id> due(time_point now) const;
    /// Adds the workers by state to `stats`.
    void count(pool_stats& stats) const;

private:
    void on_child_state(std::size_t id, child_state from, child_state to) override;
    void on_child_timer(std::size_t id, time_point from, time_point to) override;
    /// The one place a slot's status changes; its hooks keep what is derived from it.
    void set_status(slot_id slot, worker_status to);

    std::vector<worker> workers_;
    std::vector<worker_status> status_;
    std::array<std::size_t, worker_statuses> counts_{};
    dispatcher dispatch_;
    start_gate gate_;
    std::set<std::pair<time_point, slot_id>> timers_;  // workers whose timer is set
};

// Twice on every task's path (idle to busy and back), so inline.
// Always inlined: GCC 12 otherwise calls it out of line from some units (41 instructions a task).
[[gnu::always_inline]] inline void worker_set::set_status(slot_id slot, worker_status to) {
    const worker_status from = status_[slot];
    if (from == to) {
        return;
    }
    switch (from) {  // exit hooks
        case worker_status::waiting:
            gate_.withdraw(slot);  // its turn, if it comes, is skipped
            break;
        case worker_status::starting:
            gate_.start_ended();
            break;
        case worker_status::idle:
            dispatch_.not_idle(slot);
            break;
        default:
            break;
    }
    status_[slot] = to;
    --counts_[static_cast<std::size_t>(from)];
    ++counts_[static_cast<std::size_t>(to)];
    switch (to) {  // enter hooks
        case worker_status::waiting:
            gate_.enqueue(slot);
            break;
        case worker_status::starting:
            gate_.start_began();
            break;
        case worker_status::idle:
            dispatch_.became_idle(slot);
            break;
        default:
            break;
    }
}

}  // namespace torchpool::core
