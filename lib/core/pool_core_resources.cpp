// The pool core's resource policies, carried out: heartbeats to idle workers, memory
// limits, recycling and the pool's size (see pool_core.hpp; the units that decide are
// heartbeat, memory_watch and sizing).
#include "pool_core.hpp"
#include <torchpool/error.hpp>

#include <algorithm>

#include <signal.h>

namespace torchpool::core {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

void pool_core::on_heartbeat(slot_id s, const wire::heartbeat_msg& beat, time_point now) {
    if (heartbeat_.answered(s, beat.sequence, now) &&
        workers_.status(s) == worker_status::probing) {
        workers_.probe_answered(s);  // it may take tasks again
        dispatch(now);
    }
}

void pool_core::sweep_heartbeats(time_point now) {
    auto result = heartbeat_.sweep(
        now, [this](slot_id s) { return workers_.status(s) == worker_status::idle; });
    for (const auto& ping : result.pings) {
        workers_.probe(ping.slot);  // no task until it answers
        actions_.push_back(send_heartbeat_action{ping.slot, ping.sequence});
    }
    for (const slot_id s : result.unresponsive) {
        unresponsive(s, now);
    }
}

void pool_core::unresponsive(slot_id s, time_point now) {
    if (workers_[s].child.state() != child_state::running) {
        return;
    }
    const auto d = worker_diagnostics(s, now, true, true);
    report_.apply(facts::unresponsive{
        .slot = s, .diagnostics = d, .timeout = duration_cast<milliseconds>(heartbeat_.timeout())});
    stop_worker(s, stop_reason::unresponsive, false, now);
}

void pool_core::sample_memory(time_point now) {
    const auto s = memory_.due(now, [this](slot_id slot) {
        const auto state = workers_.state_of(slot);
        return state == worker_state::busy ||
               (state == worker_state::idle && workers_[slot].memory_unread);
    });
    if (s) {
        check_memory(*s, now);
    }
}

void pool_core::check_memory(slot_id s, time_point now) {
    auto& w = workers_[s];
    if (!probe_.memory) {
        return;
    }
    const auto m = probe_.memory(w.child.pid());
    w.sampled_at = now;
    w.memory_unread = false;
    if (!m) {
        return;
    }
    w.last_sample = m;
    switch (memory_.judge(m->private_bytes)) {
        case memory_watch::verdict::fine:
            break;
        case memory_watch::verdict::over_soft:
            want_recycle(
                s, recycle_over_soft_limit(m->private_bytes, memory_.params().soft_limit_bytes),
                now);
            break;
        case memory_watch::verdict::over_hard:
            memory_kill(s, *m, now);
            break;
    }
}

void pool_core::memory_kill(slot_id s, const worker_memory& m, time_point now) {
    const int pid = workers_[s].child.pid();
    // The event first: the host hears of the kill no later than the task's caller does.
    report_.apply(facts::over_memory_limit{.slot = s,
                                           .pid = pid,
                                           .held = m.private_bytes,
                                           .limit = memory_.params().hard_limit_bytes});
    if (const auto id = tasks_.running(s)) {
        auto d = worker_diagnostics(s, now, false);
        d.memory = m;
        d.summary =
            memory_limit_while_running(tasks_.describe(*id), memory_.params().hard_limit_bytes, d);
        worker_failed_under(s, *id, errc::memory_limit,
                            {.worker_pid = pid, .diagnostics = std::move(d)}, now);
    }
    stop_worker(s, stop_reason::memory, true, now);
}

void pool_core::want_recycle(slot_id s, std::string reason, time_point now) {
    auto& w = workers_[s];
    if (!w.recycle_reason.empty() || w.child.state() != child_state::running ||
        sizing_.is_leaving(s) || phase_.ending()) {
        return;  // already on its way
    }
    w.recycle_reason = std::move(reason);
    start_replacement(s, now);
}

void pool_core::start_replacement(slot_id s, time_point now) {
    auto& w = workers_[s];
    if (!sizing_.may_recycle_more()) {
        return;  // its turn comes when a replacement under way is done (resume_recycling)
    }
    const auto spare = sizing_.take_parked(true);
    report_.apply(facts::recycling{
        .slot = s, .pid = w.child.pid(), .reason = w.recycle_reason, .in_place = !spare});
    if (spare) {
        sizing_.replacing(*spare, s);
        wait_for_start(*spare, now);
        return;
    }
    // No spare slot (the pool is at its largest): replaced in place, after its task.
    w.retire_after_task = true;
    if (tasks_.sent(s).empty()) {
        leave(s, stop_reason::recycle, false, now);
    }
}

void pool_core::resume_recycling(time_point now) {
    for (slot_id s = 0; s < workers_.size() && sizing_.may_recycle_more(); ++s) {
        const auto& w = workers_[s];
        if (!w.recycle_reason.empty() && !w.retire_after_task && !sizing_.is_leaving(s) &&
            !sizing_.replacement_of(s) && w.child.state() == child_state::running) {
            start_replacement(s, now);
        }
    }
}

void pool_core::hand_over(slot_id old, time_point now) {
    auto& w = workers_[old];
    sizing_.leaving(old);
    if (workers_.state_of(old) == worker_state::busy) {
        w.retire_after_task = true;  // its task finishes first
    } else {
        leave(old, stop_reason::recycle, true, now);
    }
    resume_recycling(now);
}

void pool_core::leave(slot_id s, stop_reason why, bool park, time_point now) {
    auto& w = workers_[s];
    w.retire_after_task = false;
    if (park) {
        sizing_.leaving(s);
    }
    stop_worker(s, why, false, now);
    if (w.child.state() == child_state::stopped && park) {
        sizing_.park(s);  // it had no process: parked at once
    }
}

std::size_t pool_core::resize(std::size_t workers, time_point now) {
    const std::size_t n = sizing_.resize(workers);
    if (!phase_.admitting()) {
        return n;
    }
    while (sizing_.size() < n) {
        const auto s = sizing_.take_parked(false);
        if (!s) {
            break;
        }
        wait_for_start(*s, now);
    }
    // Shrinking: idle workers first, then those still starting, then busy ones after their task.
    for (const bool busy_too : {false, true}) {
        for (slot_id s = 0; s < workers_.size() && sizing_.size() > n; ++s) {
            const auto& w = workers_[s];
            if (sizing_.parked(s) || sizing_.is_leaving(s) || sizing_.replaces(s) ||
                w.child.state() == child_state::stopping) {
                continue;
            }
            const bool busy = workers_.state_of(s) == worker_state::busy;
            if (!busy) {
                leave(s, stop_reason::shrink, true, now);
            } else if (busy_too) {
                sizing_.leaving(s);
                workers_[s].retire_after_task = true;
            }
        }
    }
    report_.apply(facts::resized{.workers = n});
    settle(now);
    return n;
}

void pool_core::housekeeping(time_point now) {
    next_housekeeping_ = now + housekeeping_period(params_);
    if (phase_.ending()) {
        next_housekeeping_.reset();
        return;
    }
    for (slot_id s = 0; s < workers_.size(); ++s) {
        const auto& w = workers_[s];
        if (w.child.state() != child_state::running) {
            continue;
        }
        if (w.recycle_at <= now) {
            want_recycle(s, recycle_for_age(w.child.ready_since(), now), now);
        }
        const bool idle = workers_.status(s) == worker_status::idle;  // not probing
        if (idle && now - w.idle_since >= sizing_.idle_timeout() &&
            sizing_.size() > sizing_.min() && !sizing_.is_leaving(s) && !sizing_.replaces(s) &&
            w.recycle_reason.empty()) {
            leave(s, stop_reason::shrink, true, now);
        }
    }
}

machine_memory pool_core::machine_memory_now() const {
    machine_memory m;
    if (probe_.available_memory) {
        m.available_bytes = probe_.available_memory();
    }
    if (probe_.memory_pressure) {
        m.full_pressure = probe_.memory_pressure();
    }
    return m;
}

void pool_core::maybe_grow(time_point now) {
    // Not before the pool runs: tasks submitted then wait for the workers start() starts.
    if (!phase_.started() || !sizing_.may_grow() || !phase_.admitting() || restart_.degraded()) {
        return;
    }
    // One more worker per task that waits beyond those already starting, as long as the
    // machine has room for one more at its hard memory limit.
    const std::uint64_t per_worker = params_.memory.hard_limit_bytes;
    while (tasks_.queued() > workers_.gate().in_progress() + workers_.gate().waiting_count()) {
        if (per_worker > 0 && probe_.available_memory) {
            const auto available = probe_.available_memory();
            if (available && *available < per_worker) {
                return;  // within the memory budget: not now
            }
        }
        const auto s = sizing_.take_parked(false);
        if (!s) {
            return;
        }
        wait_for_start(*s, now);
    }
}

void pool_core::fail_oom_killed(slot_id s, task_id id, const std::string& how, time_point now) {
    auto d = worker_diagnostics(s, now, false);
    const int pid = d.worker_pid;
    d.signal = SIGKILL;
    d.summary =
        oom_killed_while_running(tasks_.describe(id), how, memory_.params().hard_limit_bytes, d);
    worker_failed_under(s, id, errc::memory_limit, {.worker_pid = pid, .diagnostics = std::move(d)},
                        now);
}

}  // namespace torchpool::core
