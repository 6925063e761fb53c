// The pool's size: which worker slots are in use, and when that changes. A pool has a fixed
// number of slots (its largest size, plus spares for replacing workers on purpose); the
// slots not in use are *parked* (no process, none started). It grows while tasks wait (up to
// max_workers), shrinks after workers idle (down to min_workers), follows `resize`, and
// hands a worker that is replaced on purpose (recycled: too many tasks, too old, over its
// soft memory limit) over to a new one that is ready first, a few at a time. It decides;
// the pool carries out (starts, stops, parks).
#pragma once

#include "types.hpp"
#include <torchpool/pool_params.hpp>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace torchpool::core {

/// Slots a pool with `params` needs: its largest size, and a spare per worker that may be
/// replaced on purpose at once.
std::size_t slot_capacity(const pool_params& params) noexcept;

/// How often the pool looks for workers too old to keep and workers idle long enough to
/// shrink the pool: a tenth of the shorter of the two times, at least 10 ms.
clock::duration housekeeping_period(const pool_params& params) noexcept;

class pool_sizing {
public:
    explicit pool_sizing(const pool_params& params);

    std::size_t slots() const noexcept { return parked_.size(); }
    bool parked(slot_id s) const { return parked_[s]; }
    /// Slots in use, replacements not yet handed over included.
    std::size_t in_use() const noexcept { return in_use_; }
    /// The size the pool keeps: slots in use, less replacements not yet handed over and
    /// workers on their way out.
    std::size_t size() const noexcept { return in_use_ - replacing_count_ - leaving_count_; }
    /// The worker of `s` will be parked once its process is gone (shrinking, or handed over).
    void leaving(slot_id s) {
        if (!leaving_[s]) {
            leaving_[s] = true;
            ++leaving_count_;
        }
    }
    bool is_leaving(slot_id s) const { return leaving_[s]; }
    std::size_t min() const noexcept { return min_; }
    std::size_t max() const noexcept { return max_; }
    std::chrono::milliseconds idle_timeout() const noexcept { return idle_timeout_; }

    /// Puts the first `workers` slots in use and returns them; the rest stay parked.
    std::vector<slot_id> start();

    /// The size may grow by one: below max, counting workers on their way out as still
    /// there (they hold their slots until they exit), so that the spares stay free for
    /// replacements.
    bool may_grow() const noexcept { return in_use_ - replacing_count_ < max_; }
    /// A parked slot to start, if the size may grow by one (below max; `for_replacement`:
    /// a spare for a recycled worker, which may go past max). It is in use from now on.
    std::optional<slot_id> take_parked(bool for_replacement);
    /// Slot `s` is parked again (its process is gone and it is not restarted).
    void park(slot_id s);

    /// `resize`: the new size, within what the slots allow. It becomes the size the pool
    /// shrinks back to (min); max widens to admit it.
    std::size_t resize(std::size_t workers);

    // Replacement on purpose.

    /// `replacement` was started to take over from `old`.
    void replacing(slot_id replacement, slot_id old);
    /// The slot `replacement` takes over from, if any.
    std::optional<slot_id> replaces(slot_id replacement) const;
    /// The replacement of `old` is ready, or `old` is gone before: no longer a handover.
    void handed_over(slot_id replacement);
    /// The replacement started for `old`, if one is.
    std::optional<slot_id> replacement_of(slot_id old) const { return replaced_by_[old]; }
    /// Replacements under way, and workers still leaving (they hold a slot until they
    /// exit), leave a spare slot for one more.
    bool may_recycle_more() const noexcept {
        return replacing_count_ + leaving_count_ < max_recycling_;
    }

private:
    std::vector<bool> parked_;
    std::vector<bool> leaving_;
    std::size_t leaving_count_ = 0;
    std::vector<std::optional<slot_id>> replaces_;     // by replacement slot: the old one
    std::vector<std::optional<slot_id>> replaced_by_;  // by old slot: its replacement
    std::size_t in_use_ = 0;
    std::size_t replacing_count_ = 0;
    std::size_t initial_;
    std::size_t min_;
    std::size_t max_;
    std::size_t max_recycling_;
    std::chrono::milliseconds idle_timeout_;
};

}  // namespace torchpool::core
