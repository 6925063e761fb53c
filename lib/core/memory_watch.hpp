// Memory limits per worker, decided from samples. A busy worker's memory of its own is read
// about once per `sample_interval` (one worker per tick, round robin, so that a pool of
// hundreds never reads them all in one go); an idle worker is read once after its task ends,
// and then no more: its memory does not grow without work. Over the soft limit: recycle it once its
// task ends. Over the hard limit: kill it now. With no limit set, nothing is ever read.
#pragma once

#include "types.hpp"
#include <torchpool/pool_params.hpp>

#include <chrono>
#include <cstdint>
#include <optional>

namespace torchpool::core {

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

    /// The slot to read now, the next one after the last that `is_busy(slot)` (running a task,
    /// or idle since a task ended after its last read), if any;
    /// schedules the next tick.
    template <class IsBusy>
    std::optional<slot_id> due(time_point now, IsBusy is_busy);

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
    std::size_t slots_;
    memory_params params_;
    clock::duration tick_;
    std::optional<time_point> next_;
    slot_id cursor_ = 0;
};

template <class IsBusy>
std::optional<slot_id> memory_watch::due(time_point now, IsBusy is_busy) {
    next_ = now + tick_;
    for (std::size_t i = 0; i < slots_; ++i) {
        const slot_id s = (cursor_ + i) % slots_;
        if (is_busy(s)) {
            cursor_ = s + 1;
            return s;
        }
    }
    return std::nullopt;
}

}  // namespace torchpool::core
