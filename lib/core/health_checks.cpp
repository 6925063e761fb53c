#include "health_checks.hpp"

#include <torchpool/error.hpp>

namespace torchpool::core {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

bool health_checks::heartbeat_answered(slot_id s, const wire::heartbeat_msg& beat, time_point now) {
    if (heartbeat_.answered(s, beat.sequence, now) &&
        workers_.status(s) == worker_status::probing) {
        workers_.probe_answered(s);  // it may take tasks again
        return true;
    }
    return false;
}

void health_checks::due(time_point now) {
    if (const auto sweep = heartbeat_.next_sweep(); sweep && *sweep <= now) {
        sweep_heartbeats(now);
    }
    if (const auto sample = memory_.next_sample(); sample && *sample <= now) {
        const auto s = memory_.due(
            now, [this](slot_id slot) { return workers_.status(slot) == worker_status::busy; },
            [this](slot_id slot) { return workers_.state_of(slot) == worker_state::idle; });
        if (s) {
            check_memory(*s, now);
        }
    }
}

void health_checks::sweep_heartbeats(time_point now) {
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

void health_checks::unresponsive(slot_id s, time_point now) {
    if (workers_[s].child.state() != child_state::running) {
        return;
    }
    const auto d = inspect_.diagnostics(s, now, true, true);
    report_.apply(facts::unresponsive{
        .slot = s, .diagnostics = d, .timeout = duration_cast<milliseconds>(heartbeat_.timeout())});
    lifecycle_.stop(s, stop_reason::unresponsive, false, now);
}

void health_checks::check_memory(slot_id s, time_point now) {
    if (!inspect_.probe().memory) {
        return;
    }
    const auto m = inspect_.memory(s);
    memory_.read(s, m, now);
    if (!m) {
        return;
    }
    switch (memory_.judge(m->private_bytes)) {
        case memory_watch::verdict::fine:
            break;
        case memory_watch::verdict::over_soft:
            lifecycle_.carry_out(
                slots_.want_recycle(
                    s, recycle_over_soft_limit(m->private_bytes, memory_.params().soft_limit_bytes),
                    now),
                now);
            break;
        case memory_watch::verdict::over_hard:
            memory_kill(s, *m, now);
            break;
    }
}

void health_checks::memory_kill(slot_id s, const worker_memory& m, time_point now) {
    const int pid = workers_[s].child.pid();
    // The event first: the host hears of the kill no later than the task's caller does.
    report_.apply(facts::over_memory_limit{.slot = s,
                                           .pid = pid,
                                           .held = m.private_bytes,
                                           .limit = memory_.params().hard_limit_bytes});
    if (const auto id = tasks_.running(s)) {
        auto d = inspect_.diagnostics(s, now, false);
        d.memory = m;
        d.summary =
            memory_limit_while_running(tasks_.describe(*id), memory_.params().hard_limit_bytes, d);
        flow_.failed_under(
            s, {*id, errc::memory_limit, {.worker_pid = pid, .diagnostics = std::move(d)}}, now);
    }
    lifecycle_.stop(s, stop_reason::memory, true, now);
}

}  // namespace torchpool::core
