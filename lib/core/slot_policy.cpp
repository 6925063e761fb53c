#include "slot_policy.hpp"

#include "wording.hpp"

#include <algorithm>
#include <ostream>

namespace torchpool::core {

std::ostream& operator<<(std::ostream& os, const slot_command& c) {
    if (c.what == slot_command::kind::start) {
        return os << "start{slot " << c.slot << "}";
    }
    return os << "leave{slot " << c.slot << ", reason " << static_cast<int>(c.why) << "}";
}

slot_policy::slot_policy(const pool_params& params, const worker_set& workers,
                         const pool_phase& phase, report& report)
    : params_(params),
      workers_(workers),
      phase_(phase),
      report_(report),
      sizing_(params),
      plans_(slot_capacity(params)),
      random_(params.seed ^ 0x5bd1e995u) {}

slot_commands slot_policy::start(time_point now) {
    slot_commands out;
    for (const slot_id s : sizing_.start()) {
        out.push_back({slot_command::kind::start, s});
    }
    if (params_.recycle.max_age.count() > 0 || sizing_.min() < sizing_.max() ||
        params_.max_workers > params_.workers) {
        next_housekeeping_ = now + housekeeping_period(params_);
    }
    return out;
}

void slot_policy::began_start(slot_id s) {
    plans_[s] = plan{};
}

slot_commands slot_policy::ready(slot_id s, time_point now) {
    auto& p = plans_[s];
    p.idle_since = now;
    if (params_.recycle.max_age.count() > 0) {
        const double spread =
            1.0 + std::clamp(params_.recycle.jitter, 0.0, 1.0) * (2.0 * random_.uniform() - 1.0);
        p.recycle_at =
            now + std::chrono::duration_cast<clock::duration>(params_.recycle.max_age * spread);
    }
    slot_commands out;
    if (const auto old = sizing_.replaces(s)) {
        sizing_.handed_over(s);
        hand_over(*old, out);
    }
    return out;
}

slot_commands slot_policy::answered_with_work(slot_id s, bool idle, time_point now) {
    auto& p = plans_[s];
    slot_commands out;
    if (params_.recycle.max_tasks > 0 && p.tasks_done == params_.recycle.max_tasks) {
        out = want_recycle(s, recycle_after_tasks(p.tasks_done), now);
    }
    if (idle) {
        p.idle_since = now;
        if (p.retire_after_task && running(s)) {
            leave(s, stop_reason::recycle, sizing_.is_leaving(s), out);
        }
    }
    return out;
}

slot_commands slot_policy::want_recycle(slot_id s, std::string reason, time_point) {
    auto& p = plans_[s];
    slot_commands out;
    if (!p.recycle_reason.empty() || !running(s) || sizing_.is_leaving(s) || phase_.ending()) {
        return out;  // already on its way
    }
    p.recycle_reason = std::move(reason);
    start_replacement(s, out);
    return out;
}

void slot_policy::start_replacement(slot_id s, slot_commands& out) {
    auto& p = plans_[s];
    if (!sizing_.may_recycle_more()) {
        return;  // its turn comes when a replacement under way is done (resume_recycling)
    }
    const auto spare = sizing_.take_parked(true);
    report_.apply(facts::recycling{.slot = s,
                                   .pid = workers_.at(s).child.pid(),
                                   .reason = p.recycle_reason,
                                   .in_place = !spare});
    if (spare) {
        sizing_.replacing(*spare, s);
        out.push_back({slot_command::kind::start, *spare});
        return;
    }
    // No spare slot (the pool is at its largest): replaced in place, after its task.
    p.retire_after_task = true;
    if (workers_.status(s) != worker_status::busy) {
        leave(s, stop_reason::recycle, false, out);
    }
}

void slot_policy::resume_recycling(slot_commands& out) {
    for (slot_id s = 0; s < plans_.size() && sizing_.may_recycle_more(); ++s) {
        const auto& p = plans_[s];
        if (!p.recycle_reason.empty() && !p.retire_after_task && !sizing_.is_leaving(s) &&
            !sizing_.replacement_of(s) && running(s)) {
            start_replacement(s, out);
        }
    }
}

void slot_policy::hand_over(slot_id old, slot_commands& out) {
    sizing_.leaving(old);
    if (workers_.status(old) == worker_status::busy) {
        plans_[old].retire_after_task = true;  // its task finishes first
    } else {
        leave(old, stop_reason::recycle, true, out);
    }
    resume_recycling(out);
}

void slot_policy::leave(slot_id s, stop_reason why, bool park, slot_commands& out) {
    plans_[s].retire_after_task = false;
    if (park) {
        sizing_.leaving(s);
    }
    out.push_back({slot_command::kind::leave, s, why});
}

bool slot_policy::gone(slot_id s, slot_commands& next) {
    const auto replacement = sizing_.replacement_of(s);
    if (!sizing_.is_leaving(s) && !replacement) {
        return false;
    }
    // It leaves the pool (shrinking, or replaced); a replacement still starting for it takes
    // its place as an ordinary worker.
    if (replacement) {
        sizing_.handed_over(*replacement);
    }
    sizing_.park(s);
    resume_recycling(next);  // a slot is free for a replacement that waited
    return true;
}

slot_commands slot_policy::resize(std::size_t workers, std::size_t& size) {
    const std::size_t n = sizing_.resize(workers);
    size = n;
    slot_commands out;
    if (!phase_.admitting()) {
        return out;
    }
    while (sizing_.size() < n) {
        const auto s = sizing_.take_parked(false);
        if (!s) {
            break;
        }
        out.push_back({slot_command::kind::start, *s});
    }
    // Shrinking: idle workers first, then those still starting, then busy ones after their task.
    for (const bool busy_too : {false, true}) {
        for (slot_id s = 0; s < plans_.size() && sizing_.size() > n; ++s) {
            if (sizing_.parked(s) || sizing_.is_leaving(s) || sizing_.replaces(s) ||
                workers_.status(s) == worker_status::stopping) {
                continue;
            }
            if (workers_.status(s) != worker_status::busy) {
                leave(s, stop_reason::shrink, true, out);
            } else if (busy_too) {
                sizing_.leaving(s);
                plans_[s].retire_after_task = true;
            }
        }
    }
    return out;
}

slot_commands slot_policy::housekeeping(time_point now) {
    next_housekeeping_ = now + housekeeping_period(params_);
    slot_commands out;
    if (phase_.ending()) {
        next_housekeeping_.reset();
        return out;
    }
    for (slot_id s = 0; s < plans_.size(); ++s) {
        if (!running(s)) {
            continue;
        }
        const auto& p = plans_[s];
        if (p.recycle_at <= now) {
            auto more =
                want_recycle(s, recycle_for_age(workers_.at(s).child.ready_since(), now), now);
            out.insert(out.end(), more.begin(), more.end());
        }
        const bool idle = workers_.status(s) == worker_status::idle;  // not probing
        if (idle && now - p.idle_since >= sizing_.idle_timeout() &&
            sizing_.size() > sizing_.min() && !sizing_.is_leaving(s) && !sizing_.replaces(s) &&
            p.recycle_reason.empty()) {
            leave(s, stop_reason::shrink, true, out);
        }
    }
    return out;
}

slot_commands slot_policy::grow(
    std::size_t unserved, const std::function<std::optional<std::uint64_t>()>& available_memory) {
    slot_commands out;
    // Not before the pool runs: tasks submitted then wait for the workers start() starts.
    if (!phase_.started() || !phase_.admitting()) {
        return out;
    }
    // One more worker per task that waits beyond those already starting, as long as the
    // machine has room for one more at its hard memory limit.
    const std::uint64_t per_worker = params_.memory.hard_limit_bytes;
    for (; unserved > 0 && sizing_.may_grow(); --unserved) {
        if (per_worker > 0 && available_memory) {
            const auto available = available_memory();
            if (available && *available < per_worker) {
                break;  // within the memory budget: not now
            }
        }
        const auto s = sizing_.take_parked(false);
        if (!s) {
            break;
        }
        out.push_back({slot_command::kind::start, *s});
    }
    return out;
}

}  // namespace torchpool::core
