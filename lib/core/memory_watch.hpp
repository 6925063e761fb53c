// Memory limits per worker, decided from samples. A busy worker's memory of its own is read
// about once per `sample_interval` (one worker per tick, round robin, so that a pool of
// hundreds never reads them all in one go); an idle worker is read once after its task ends,
// and then no more: its memory does not grow without work. Over the soft limit: recycle it once its
// task ends. Over the hard limit: kill it now. With no limit set, nothing is ever read. It
// keeps each worker's last reading (the evidence when a worker dies of memory), and nothing
// else writes it.
#pragma once

#include "types.hpp"
#include <torchpool/pool_params.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

namespace torchpool::core {

/// `private_bytes` is at least 80% of the lowest limit of `limits`: worth reading exactly
/// (tensor shared memory told apart), and evidence of an OOM kill.
inline bool near_memory_limit(const memory_params& limits, std::uint64_t private_bytes) noexcept {
    std::uint64_t lowest = limits.hard_limit_bytes;
    if (limits.soft_limit_bytes > 0 && (lowest == 0 || limits.soft_limit_bytes < lowest)) {
        lowest = limits.soft_limit_bytes;
    }
    return lowest > 0 && private_bytes >= lowest / 10 * 8;
}

class memory_watch {
public:
    memory_watch(std::size_t slots, const memory_params& params);

    bool enabled() const noexcept {
        return params_.soft_limit_bytes > 0 || params_.hard_limit_bytes > 0;
    }
    const memory_params& params() const noexcept { return params_; }

    /// When the next worker is read, if limits are set and the pool runs.
    std::optional<time_point> next_sample() const noexcept { return next_; }
    void start(time_point now);
    void stop() noexcept { next_.reset(); }

    /// The slot to read now, the next one after the last that `is_busy(slot)` (running a task)
    /// or that is idle (`is_idle`) since a task ended after its last read, if any; schedules
    /// the next tick.
    template <class IsBusy, class IsIdle>
    std::optional<slot_id> due(time_point now, IsBusy is_busy, IsIdle is_idle);

    /// The last task of `slot` ended: true if it is to be read now (what a task left behind
    /// is seen once it ends, not only while tasks run), at most once per interval; else a
    /// later tick reads it, idle or not.
    bool task_ended(slot_id slot, time_point now) {
        auto& r = readings_[slot];
        if (!r.last || now - r.at >= params_.sample_interval) {
            return true;
        }
        r.unread = true;
        return false;
    }
    /// `slot` was read at `now` (nullopt: it could not be).
    void read(slot_id slot, const std::optional<worker_memory>& m, time_point now) {
        auto& r = readings_[slot];
        r.at = now;
        r.unread = false;
        if (m) {
            r.last = m;
        }
    }
    /// Its last reading, if any.
    const std::optional<worker_memory>& last(slot_id slot) const { return readings_[slot].last; }
    /// A new process in `slot`: nothing read of it yet.
    void forget(slot_id slot) { readings_[slot] = {}; }

    enum class verdict { fine, over_soft, over_hard };
    verdict judge(std::uint64_t private_bytes) const noexcept {
        if (params_.hard_limit_bytes > 0 && private_bytes >= params_.hard_limit_bytes) {
            return verdict::over_hard;
        }
        if (params_.soft_limit_bytes > 0 && private_bytes >= params_.soft_limit_bytes) {
            return verdict::over_soft;
        }
        return verdict::fine;
    }

private:
    struct reading {
        std::optional<worker_memory> last;  // its memory, last read
        time_point at{};                    // when it was read
        bool unread = false;                // a task ended since it was read
    };

    std::vector<reading> readings_;
    std::size_t slots_;
    memory_params params_;
    clock::duration tick_;
    std::optional<time_point> next_;
    slot_id cursor_ = 0;
};

template <class IsBusy, class IsIdle>
std::optional<slot_id> memory_watch::due(time_point now, IsBusy is_busy, IsIdle is_idle) {
    next_ = now + tick_;
    for (std::size_t i = 0; i < slots_; ++i) {
        const slot_id s = (cursor_ + i) % slots_;
        if (is_busy(s) || (readings_[s].unread && is_idle(s))) {
            cursor_ = s + 1;
            return s;
        }
    }
    return std::nullopt;
}

}  // namespace torchpool::core
