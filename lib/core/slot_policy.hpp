// Which worker slots hold workers, and when a worker leaves on purpose: the pool grows while
// tasks wait, shrinks after workers idle, follows `resize`, and replaces workers on purpose
// (recycling: too many tasks answered, too old, over the soft memory limit). A recycled
// worker is handed over: a replacement starts in a spare slot and, once it is ready, the old
// worker leaves (at once if idle, else after its task); with no spare slot it is restarted in
// place after its task. Each slot's plan moves through these resume points:
//
//   kept --want--> replacing (a spare starts) --spare ready--> leaving (after its task, if busy)
//     \--want, no spare--> in place (after its task) --------> leaving (parked: no)
//
// It is told of the pool's events (a start began, a worker became ready, answered, is gone)
// and returns slot commands for the coordinator to carry out; it keeps the slots' use
// (pool_sizing) and each slot's recycling state, and nothing else writes them.
#pragma once

#include "backoff.hpp"
#include "pool_phase.hpp"
#include "report.hpp"
#include "sizing.hpp"
#include "types.hpp"
#include "worker_set.hpp"
#include <torchpool/pool_params.hpp>

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace torchpool::core {

/// What the slot policy asks of the coordinator.
struct slot_command {
    enum class kind {
        start,  ///< the slot waits for its turn to start a worker
        leave,  ///< its worker is asked to exit (why); then the slot is parked or restarted
    };
    kind what;
    slot_id slot;
    stop_reason why = stop_reason::none;

    friend bool operator==(const slot_command&, const slot_command&) = default;
};
std::ostream& operator<<(std::ostream& os, const slot_command& c);
using slot_commands = std::vector<slot_command>;

class slot_policy {
public:
    slot_policy(const pool_params& params, const worker_set& workers, const pool_phase& phase,
                report& report);

    std::size_t slots() const noexcept { return sizing_.slots(); }
    std::size_t in_use() const noexcept { return sizing_.in_use(); }
    std::size_t size() const noexcept { return sizing_.size(); }
    bool parked(slot_id s) const { return sizing_.parked(s); }

    /// A parked slot put back in use, whatever the size (the pool drains with tasks left
    /// and no slot in use).
    std::optional<slot_id> unpark() { return sizing_.take_parked(true); }
    /// The pool starts: the slots to start now.
    slot_commands start(time_point now);
    /// The pool drains or stops: nothing more is recycled or shrunk.
    void stop() noexcept { next_housekeeping_.reset(); }
    /// When housekeeping() is due, if ever.
    std::optional<time_point> next_housekeeping() const noexcept { return next_housekeeping_; }

    /// A new process is being started in slot `s`: its plan starts over.
    void began_start(slot_id s);
    /// The worker of `s` said hello; if it replaces another, that one leaves.
    slot_commands ready(slot_id s, time_point now);
    /// The worker of `s` answered a task; `idle`: it holds no other. On every task's path:
    /// the common case (nothing to do) is inline.
    slot_commands answered(slot_id s, bool idle, time_point now) {
        auto& p = plans_[s];
        ++p.tasks_done;
        const bool enough =
            params_.recycle.max_tasks > 0 && p.tasks_done == params_.recycle.max_tasks;
        if (!enough && !(idle && p.retire_after_task)) {
            if (idle) {
                p.idle_since = now;
            }
            return {};
        }
        return answered_with_work(s, idle, now);
    }
    /// The worker of `s` should be replaced on purpose (`reason`, a clause).
    slot_commands want_recycle(slot_id s, std::string reason, time_point now);
    /// The process of `s` is gone (reaped, or it had none): true if the slot leaves the pool
    /// (parked), false if it is to be restarted. A slot parked may let a recycle that waited
    /// for its turn go ahead (`next`).
    bool gone(slot_id s, slot_commands& next);
    /// Periodic: workers too old to keep, workers idle long enough to shrink the pool.
    slot_commands housekeeping(time_point now);
    /// The pool's size becomes `workers` (within its slots); `size` is set to what it became.
    slot_commands resize(std::size_t workers, std::size_t& size);
    /// Tasks wait beyond the starts under way (`unserved`): slots to start, up to
    /// max_workers, while the machine has memory for one more worker (`available_memory`,
    /// if known, against the hard memory limit).
    slot_commands grow(std::size_t unserved,
                       const std::function<std::optional<std::uint64_t>()>& available_memory);

private:
    struct plan {
        std::string recycle_reason;                 // it is to be replaced, and why
        bool retire_after_task = false;             // it leaves once its task is answered
        std::size_t tasks_done = 0;                 // tasks it answered
        time_point recycle_at = time_point::max();  // replaced for its age at this time
        time_point idle_since{};                    // when it last became idle
    };

    slot_commands answered_with_work(slot_id s, bool idle, time_point now);
    void start_replacement(slot_id s, slot_commands& out);
    void resume_recycling(slot_commands& out);
    void hand_over(slot_id old, slot_commands& out);
    void leave(slot_id s, stop_reason why, bool park, slot_commands& out);
    bool running(slot_id s) const { return workers_.at(s).child.state() == child_state::running; }

    const pool_params& params_;
    const worker_set& workers_;
    const pool_phase& phase_;
    report& report_;
    pool_sizing sizing_;
    std::vector<plan> plans_;
    random_source random_;  // jitter of the recycling age
    std::optional<time_point> next_housekeeping_;
};

}  // namespace torchpool::core
