// The pool's worker slots, and what the pool derives from their processes' states, kept
// right in one place: every change of a worker's state or timer comes here (this is the
// workers' observer) and updates the idle list, the start gate's count of starts in
// progress, the index of worker timers, and the counts of ready and stopped workers. It
// decides nothing.
#pragma once

#include "dispatch.hpp"
#include "load_progress.hpp"
#include "start_gate.hpp"
#include "supervised_child.hpp"
#include "task_table.hpp"
#include "types.hpp"
#include <torchpool/pool_params.hpp>
#include <torchpool/stats.hpp>
#include <torchpool/task.hpp>

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

class worker_set final : private supervised_child::observer {
public:
    struct worker {
        worker(slot_id slot, std::size_t log_bytes, std::size_t load_extensions,
               supervised_child::observer* observer)
            : child(slot, log_bytes, observer), load(load_extensions) {}
        supervised_child child;
        time_point task_start{};                    // when its running task started
        std::optional<std::string> channel_closed;  // how its channel ended, if it has
        std::optional<worker_memory> last_sample;   // its memory, last read
        time_point sampled_at{};                    // when it was read
        bool memory_unread = false;                 // a task ended since it was read
        std::string recycle_reason;                 // it is to be replaced, and why
        bool retire_after_task = false;             // stop it once its task is answered
        std::size_t tasks_done = 0;                 // tasks it answered
        time_point recycle_at = time_point::max();  // replaced for its age at this time
        time_point idle_since{};                    // when it last became idle
        load_progress load;                         // more time while it loads, if it computes
    };

    /// `tasks` tells idle from busy.
    worker_set(const pool_params& params, const task_table& tasks);
    // Its workers point back to it.
    worker_set(const worker_set&) = delete;
    worker_set& operator=(const worker_set&) = delete;

    std::size_t size() const noexcept { return workers_.size(); }
    worker& operator[](slot_id slot) { return workers_[slot]; }
    const worker& operator[](slot_id slot) const { return workers_[slot]; }
    const worker& at(slot_id slot) const { return workers_.at(slot); }
    worker_state state_of(slot_id slot) const;

    dispatcher& dispatch() noexcept { return dispatch_; }
    start_gate& gate() noexcept { return gate_; }
    /// Some worker is ready (idle or busy).
    bool any_ready() const noexcept { return running_ > 0; }
    std::size_t ready_count() const noexcept { return running_; }
    bool all_stopped() const noexcept { return stopped_ == workers_.size(); }

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

    const task_table& tasks_;
    std::vector<worker> workers_;
    dispatcher dispatch_;
    start_gate gate_;
    std::set<std::pair<time_point, slot_id>> timers_;  // workers whose timer is set
    std::size_t running_ = 0;                          // ready: idle or busy
    std::size_t stopped_ = 0;                          // stopped for good
};

}  // namespace torchpool::core
