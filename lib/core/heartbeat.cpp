#include "heartbeat.hpp"

#include <algorithm>

namespace torchpool::core {

heartbeat_monitor::heartbeat_monitor(std::size_t slots, std::chrono::milliseconds interval,
                                     std::chrono::milliseconds timeout)
    : workers_(slots),
      interval_(interval),
      timeout_(std::max(timeout, std::chrono::milliseconds{1})),
      period_(std::max<clock::duration>(std::min(interval_, timeout_) / 2,
                                        std::chrono::milliseconds{1})) {}

void heartbeat_monitor::ready(slot_id slot, bool answers, time_point now) {
    workers_[slot] = {.answers = answers && enabled(), .last_active = now};
}

bool heartbeat_monitor::answered(slot_id slot, std::uint64_t sequence, time_point now) {
    auto& w = workers_[slot];
    if (!w.sent_at || w.sequence != sequence) {
        return false;  // late, or not ours: a worker may send heartbeats of its own
    }
    w.sent_at.reset();
    w.last_active = now;
    return true;
}

void heartbeat_monitor::start(time_point now) {
    if (enabled()) {
        next_sweep_ = now + period_;
    }
}

}  // namespace torchpool::core
