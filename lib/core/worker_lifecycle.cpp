#include "worker_lifecycle.hpp"

#include <algorithm>

#include <signal.h>

namespace torchpool::core {

// --- starts ------------------------------------------------------------------------------

void worker_lifecycle::park_all() {
    for (slot_id s = 0; s < workers_.size(); ++s) {
        retire(s);
    }
}

void worker_lifecycle::wait_for_start(slot_id s, time_point now) {
    workers_.wait_for_start(s);
    start_waiting(now);
}

void worker_lifecycle::start_waiting(time_point now) {
    // Called after every event that may end a start; with nobody waiting (the common
    // case) it costs nothing.
    if (!workers_.gate().anyone_waiting() || phase_.stopping() ||
        (server_.enabled() && !server_.ready())) {
        return;
    }
    while (const auto s = workers_.next_to_start()) {
        begin_start(*s, now);
    }
}

void worker_lifecycle::begin_start(slot_id s, time_point now) {
    auto& w = workers_[s];
    if (w.child.ever_started()) {
        report_.apply(facts::worker_restarting{});
    }
    tasks_.drop_sent(s);
    w.channel_closed.reset();
    memory_.forget(s);
    slots_.began_start(s);
    w.load.reset();
    w.child.begin_start(now, now + params_.spawn_timeout);
    if (server_.enabled()) {
        actions_.push_back(fork_action{s});
    } else {
        actions_.push_back(spawn_action{s});
    }
}

void worker_lifecycle::requeue_fork_requests(time_point now) {
    for (slot_id s = 0; s < workers_.size(); ++s) {
        if (awaiting_fork(s)) {
            wait_for_start(s, now);
        }
    }
}

void worker_lifecycle::spawned(slot_id s, int pid, time_point now) {
    workers_[s].child.spawned(pid, now);
    // The spawn is done; now the load.
    workers_[s].child.set_timer(timer_purpose::start_deadline, now + params_.load_timeout);
    report_.apply(facts::worker_spawned{.slot = s, .pid = pid});
}

std::optional<std::string> worker_lifecycle::hello(slot_id s, const wire::hello_msg& hello,
                                                   time_point now) {
    auto& w = workers_[s];
    if (w.child.state() != child_state::starting) {
        return second_hello();
    }
    if (hello.protocol_version != wire::protocol_version) {
        return other_protocol_version(hello.protocol_version, wire::protocol_version);
    }
    w.child.became_ready(now);
    heartbeat_.ready(s,
                     std::find(hello.capabilities.begin(), hello.capabilities.end(),
                               wire::answers_heartbeats) != hello.capabilities.end(),
                     now);
    carry_out(slots_.ready(s, now), now);
    report_.apply(facts::worker_ready{.slot = s,
                                      .pid = w.child.pid(),
                                      .started = w.child.process_start(),
                                      .now = now,
                                      .recovered = restart_.start_succeeded(now)});
    return std::nullopt;
}

void worker_lifecycle::carry_out_each(const slot_commands& commands, time_point now) {
    for (const auto& c : commands) {
        switch (c.what) {
            case slot_command::kind::start:
                wait_for_start(c.slot, now);
                break;
            case slot_command::kind::leave:
                stop(c.slot, c.why, false, now);
                if (workers_.status(c.slot) == worker_status::stopped) {
                    slot_commands next;  // it had no process: gone at once
                    slots_.gone(c.slot, next);
                    carry_out(next, now);
                }
                break;
        }
    }
}

time_point worker_lifecycle::restart_time(unsigned failures, bool counts, time_point now) {
    const auto d = restart_.next_start(failures, counts, now);
    report_.apply(facts::restart_paced{.paced = d.paced,
                                       .began = d.pacing_began,
                                       .ended = d.pacing_ended,
                                       .intensity = restart_.intensity(),
                                       .period = restart_.period()});
    return d.at;
}

// --- ends --------------------------------------------------------------------------------

void worker_lifecycle::stop(slot_id s, stop_reason reason, bool force, time_point now) {
    auto& w = workers_[s];
    if (awaiting_fork(s)) {
        // Asked of the fork server, no process yet: nothing to signal.
        w.child.clear_timer();
        if (reason == stop_reason::spawn_timeout) {
            // The fork server has not answered in time, so it is stuck: replacing it asks
            // again for this worker (requeue_fork_requests).
            server_.kill_because(fork_request_unanswered(params_.spawn_timeout), now);
            return;
        }
        // A worker that the fork server still hands over is killed by the driver.
        w.child.retire();
        return;
    }
    tasks_.release(s);
    const bool already_stopping = w.child.state() == child_state::stopping;
    const stop_step step = w.child.stop(reason, force, now, params_.stop_grace);
    if (step != stop_step::none && !already_stopping && !on_purpose(reason)) {
        report_.apply(facts::killed_by_pool{});
    }
    switch (step) {
        case stop_step::none:
            break;
        case stop_step::kill:
            actions_.push_back(signal_action{s, SIGKILL});
            break;
        case stop_step::ask:
            if (on_purpose(reason)) {
                actions_.push_back(send_shutdown_action{s});
            } else {
                actions_.push_back(signal_action{s, SIGTERM});
            }
            break;
    }
}

void worker_lifecycle::channel_closed(slot_id s, std::string what, time_point now) {
    auto& w = workers_[s];
    const auto state = w.child.state();
    if (state != child_state::starting && state != child_state::running) {
        return;
    }
    // Usually the worker is exiting and its exit status is about to be reaped; wait for it,
    // so the caller learns how it died rather than just that its channel closed.
    w.channel_closed = std::move(what);
    w.child.set_timer_if_sooner(timer_purpose::channel_grace, now + params_.stop_grace);
}

std::string worker_lifecycle::failed_start(slot_id s, std::string why) {
    report_.apply(facts::start_failed{});
    workers_[s].child.count_failed_start();
    return why;
}

std::optional<worker_end> worker_lifecycle::protocol_error(slot_id s, const std::string& what,
                                                           time_point now) {
    auto& w = workers_[s];
    const auto state = w.child.state();
    if (state == child_state::stopping || state == child_state::stopped ||
        state == child_state::backoff) {
        return std::nullopt;
    }
    worker_end end;
    const int pid = w.child.pid();
    if (state == child_state::running) {
        w.child.count_failure(now, params_.restart_backoff.reset_after);
    }
    if (auto id = tasks_.running(s)) {
        auto d = inspect_.diagnostics(s, now, true);
        d.summary = protocol_error_while_running(tasks_.describe(*id), what, d);
        end.task = {*id, errc::protocol_error, {.worker_pid = pid, .diagnostics = std::move(d)}};
    }
    if (state == child_state::starting) {
        end.failed_start = failed_start(s, broke_protocol_before_ready(pid, what));
    }
    return end;
}

std::optional<worker_end> worker_lifecycle::exited(slot_id s, const exit_status& status,
                                                   time_point now) {
    auto& w = workers_[s];
    const worker_state was = workers_.state_of(s);
    if (was == worker_state::backoff || was == worker_state::stopped) {
        return std::nullopt;  // no process; cannot happen, but must not restart anything
    }
    worker_end end{.pid = w.child.pid(), .how = describe_exit(status), .was = to_string(was)};
    if (status.oom_killed) {
        report_.apply(facts::oom_killed{
            .slot = s, .pid = end.pid, .limit = memory_.params().hard_limit_bytes});
    }
    switch (was) {
        case worker_state::starting:
            end.failed_start =
                failed_start(s, exited_before_ready(end.pid, end.how, w.child.process_start(), now,
                                                    w.child.log().text()));
            break;
        case worker_state::idle:
            w.child.count_failure(now, params_.restart_backoff.reset_after);
            report_.apply(facts::worker_died{.by_signal = status.signal.has_value()});
            break;
        case worker_state::busy:
            w.child.count_failure(now, params_.restart_backoff.reset_after);
            report_.apply(facts::worker_died{.by_signal = status.signal.has_value()});
            if (const auto id = tasks_.running(s)) {
                end.task = died_under(s, *id, status, end.how, now);
            } else {
                tasks_.release(s);  // it was running a task nobody waits for any more
            }
            break;
        case worker_state::stopping:
            if (w.child.reason() == stop_reason::spawn_timeout) {
                end.failed_start = failed_start(s, not_ready_in_time(end.pid, params_.load_timeout,
                                                                     w.load, w.child.log().text()));
            }
            break;
        case worker_state::backoff:
        case worker_state::stopped:
            break;
    }
    return end;
}

worker_end::task_failure worker_lifecycle::died_under(slot_id s, task_id id,
                                                      const exit_status& status,
                                                      const std::string& how,
                                                      time_point now) const {
    auto d = inspect_.diagnostics(s, now, false);
    const int pid = d.worker_pid;
    if (status.oom_killed) {
        d.signal = SIGKILL;
        d.summary = oom_killed_while_running(tasks_.describe(id), how,
                                             memory_.params().hard_limit_bytes, d);
        return {id, errc::memory_limit, {.worker_pid = pid, .diagnostics = std::move(d)}};
    }
    d.exit_code = status.exit_code;
    d.signal = status.signal;
    d.core_dumped = status.core_dumped;
    d.summary = died_while_running(tasks_.describe(id), how, d) +
                oom_evidence(status, memory_.last(s), memory_.params(),
                             status.signal == SIGKILL ? inspect_.machine() : machine_memory{});
    return {id, errc::worker_died, {.worker_pid = pid, .diagnostics = std::move(d)}};
}

void worker_lifecycle::after_exit(slot_id s, time_point now) {
    auto& w = workers_[s];
    w.child.process_gone();
    heartbeat_.gone(s);
    tasks_.drop_sent(s);
    const bool no_more_work = phase_.draining() && tasks_.queued() == 0 && tasks_.waiting() == 0;
    if (phase_.stopping() || phase_.finished() || no_more_work) {
        w.child.retire();
        return;
    }
    if (slot_commands next; slots_.gone(s, next)) {
        w.child.retire();  // parked: it leaves the pool (shrinking, or replaced)
        carry_out(next, now);
        return;
    }
    // A worker replaced on purpose does not count against the restart intensity.
    const bool planned = on_purpose(w.child.reason());
    const time_point at = restart_time(w.child.failures(), !planned, now);
    if (at <= now) {
        wait_for_start(s, now);
    } else {
        w.child.restart_at(at);
    }
}

// --- time --------------------------------------------------------------------------------

bool worker_lifecycle::loading_with_progress(slot_id s) {
    auto& w = workers_[s];
    if (!w.load.extend(inspect_.cpu_time(w.child))) {
        return false;
    }
    report_.apply(facts::load_extended{});
    return true;
}

void worker_lifecycle::cancel_grace_over(slot_id s, time_point now) {
    // Its running task was cancelled (terminal) and it has not answered: killed, and what it
    // was doing is told to the host, since its caller has long been completed.
    auto d = inspect_.diagnostics(s, now, true, true);
    report_.apply(
        facts::cancel_ignored{.slot = s, .diagnostics = d, .grace = params_.cancel_grace});
    stop(s, stop_reason::cancelled, true, now);
}

std::optional<std::string> worker_lifecycle::timer_due(slot_id s, time_point now) {
    auto& w = workers_[s];
    const auto state = w.child.state();
    if (w.channel_closed && (state == child_state::starting || state == child_state::running)) {
        // A closed channel outranks whatever else was due: the worker is gone in all but
        // its exit.
        return closed_without_exit(*w.channel_closed);
    }
    switch (w.child.due()) {
        case timer_purpose::start_deadline:
            if (loading_with_progress(s)) {
                w.child.set_timer(timer_purpose::start_deadline, now + params_.load_timeout);
            } else {
                stop(s, stop_reason::spawn_timeout, true, now);
            }
            break;
        case timer_purpose::restart:
            wait_for_start(s, now);
            break;
        case timer_purpose::stop_grace:
            stop(s, w.child.reason(), true, now);
            break;
        case timer_purpose::cancel_grace:
            cancel_grace_over(s, now);
            break;
        case timer_purpose::channel_grace:  // handled above; its state moved on since
        case timer_purpose::none:
            w.child.clear_timer();
            break;
    }
    return std::nullopt;
}

}  // namespace torchpool::core
