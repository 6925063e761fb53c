// The pool core's worker and fork-server lifecycles: starts, restarts, exits and stops
// (see pool_core.hpp).
#include "pool_core.hpp"
#include <torchpool/error.hpp>

#include <boost/asio/error.hpp>

#include <algorithm>

#include <signal.h>

namespace torchpool::core {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

// --- starts ------------------------------------------------------------------------------

bool pool_core::start(time_point now) {
    if (!phase_.start()) {
        return false;
    }
    server_.start(false, now);
    heartbeat_.start(now);
    memory_.start(now);
    for (slot_id s = 0; s < workers_.size(); ++s) {
        workers_[s].child.retire();  // parked until the pool uses the slot
    }
    carry_out(slots_.start(now), now);
    return true;
}

void pool_core::wait_for_start(slot_id s, time_point now) {
    workers_.wait_for_start(s);
    start_waiting(now);
}

void pool_core::start_waiting(time_point now) {
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

void pool_core::begin_start(slot_id s, time_point now) {
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

bool pool_core::awaiting_fork(slot_id s) const {
    return server_.enabled() && workers_.at(s).child.awaiting_process();
}

void pool_core::on_spawned(slot_id s, int pid, time_point now) {
    workers_[s].child.spawned(pid, now);
    // The spawn is done; now the load.
    workers_[s].child.set_timer(timer_purpose::start_deadline, now + params_.load_timeout);
    report_.apply(facts::worker_spawned{.slot = s, .pid = pid});
}

void pool_core::on_spawn_error(slot_id s, std::string why, time_point now) {
    workers_[s].child.count_failed_start();
    start_failed(std::move(why), now);
    after_exit(s, now);
    report_.apply(
        facts::spawn_failed{.slot = s, .why = restart_.last_error(), .next = next_start(s, now)});
    settle(now);
}

void pool_core::note(std::string what) {
    report_.apply(facts::notice{std::move(what)});
}

void pool_core::start_failed(std::string why, time_point now) {
    if (!restart_.start_failed(std::move(why), workers_.any_ready(), now)) {
        return;
    }
    report_.apply(facts::degraded{.after_failures = params_.spawn_failures_until_degraded,
                                  .last_error = restart_.last_error()});
    fail_queued(errc::spawn_failed, refused_degraded(nullptr, restart_.last_error()));
}

time_point pool_core::restart_time(unsigned failures, bool counts, time_point now) {
    const auto d = restart_.next_start(failures, counts, now);
    report_.apply(facts::restart_paced{.paced = d.paced,
                                       .began = d.pacing_began,
                                       .ended = d.pacing_ended,
                                       .intensity = restart_.intensity(),
                                       .period = restart_.period()});
    return d.at;
}

// --- the fork server ---------------------------------------------------------------------

void pool_core::on_server_spawned(int pid, time_point now) {
    server_.spawned(pid, now);
}

void pool_core::on_server_spawn_error(std::string why, time_point now) {
    server_gone(server_.describe_spawn_error(why), now);
}

void pool_core::on_server_hello(const wire::hello_msg& hello, time_point now) {
    if (auto problem = server_.hello(hello, now)) {
        on_server_protocol_error(std::move(*problem), now);
        return;
    }
    settle(now);  // the workers waiting for it may start
}

void pool_core::on_server_protocol_error(std::string what, time_point now) {
    server_.protocol_error(std::move(what), now);
}

void pool_core::on_server_log(std::string_view bytes) {
    server_.log(bytes);
}

void pool_core::on_server_exit(const exit_status& status, time_point now) {
    server_gone(server_.describe_end(status, now), now);
}

void pool_core::server_gone(std::string why, time_point now) {
    const auto end = server_.gone(why, phase_.stopping(), now);
    if (!end.for_good) {
        requeue_fork_requests(now);
        if (end.was_failed_start) {
            server_.count_failed_start();
            start_failed(std::move(why), now);
        }
        server_.restart_at(restart_time(server_.child().failures(), true, now), now);
    }
    check_finished(now);
}

// Workers asked of a fork server that is gone will never come: ask again, from the next one.
void pool_core::requeue_fork_requests(time_point now) {
    for (slot_id s = 0; s < workers_.size(); ++s) {
        if (awaiting_fork(s)) {
            wait_for_start(s, now);
        }
    }
}

// --- exits and stops ---------------------------------------------------------------------

void pool_core::on_exit(slot_id s, const exit_status& status, time_point now) {
    auto& w = workers_[s];
    const worker_state was = workers_.state_of(s);
    if (was == worker_state::backoff || was == worker_state::stopped) {
        return;  // no process; cannot happen, but must not restart anything
    }
    const std::string how = describe_exit(status);
    const int pid = w.child.pid();
    if (status.oom_killed) {
        report_.apply(
            facts::oom_killed{.slot = s, .pid = pid, .limit = memory_.params().hard_limit_bytes});
    }
    switch (was) {
        case worker_state::starting:
            report_.apply(facts::start_failed{});
            w.child.count_failed_start();
            start_failed(
                exited_before_ready(pid, how, w.child.process_start(), now, w.child.log().text()),
                now);
            break;
        case worker_state::idle:
            w.child.count_failure(now, params_.restart_backoff.reset_after);
            report_.apply(facts::worker_died{.by_signal = status.signal.has_value()});
            break;
        case worker_state::busy: {
            w.child.count_failure(now, params_.restart_backoff.reset_after);
            report_.apply(facts::worker_died{.by_signal = status.signal.has_value()});
            const auto id = tasks_.running(s);
            if (!id) {
                tasks_.release(s);  // it was running a task nobody waits for any more
                break;
            }
            if (status.oom_killed) {
                fail_oom_killed(s, *id, how, now);
                break;
            }
            auto d = inspect_.diagnostics(s, now, false);
            d.exit_code = status.exit_code;
            d.signal = status.signal;
            d.core_dumped = status.core_dumped;
            d.summary =
                died_while_running(tasks_.describe(*id), how, d) +
                oom_evidence(status, memory_.last(s), memory_.params(),
                             status.signal == SIGKILL ? inspect_.machine() : machine_memory{});
            worker_failed_under(s, *id, errc::worker_died,
                                {.worker_pid = pid, .diagnostics = std::move(d)}, now);
            break;
        }
        case worker_state::stopping:
            if (w.child.reason() == stop_reason::spawn_timeout) {
                report_.apply(facts::start_failed{});
                w.child.count_failed_start();
                start_failed(
                    not_ready_in_time(pid, params_.load_timeout, w.load, w.child.log().text()),
                    now);
            }
            break;
        case worker_state::backoff:
        case worker_state::stopped:
            break;
    }
    after_exit(s, now);
    report_.apply(facts::worker_exited{
        .slot = s, .pid = pid, .how = how, .was = to_string(was), .next = next_start(s, now)});
    settle(now);
}

facts::next_start pool_core::next_start(slot_id s, time_point now) const {
    const auto& child = workers_[s].child;
    return {.state = child.state(), .at = child.timer(), .now = now};
}

void pool_core::after_exit(slot_id s, time_point now) {
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

void pool_core::stop_worker(slot_id s, stop_reason reason, bool force, time_point now) {
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

void pool_core::shutdown(time_point now) {
    const bool was_started = phase_.started();
    if (!phase_.drain()) {
        return;
    }
    // Heartbeats and memory limits go on while admitted tasks finish: a worker that hangs
    // or grows while the pool drains is still found out (else the drain could wait for it
    // for ever). They stop when the run finishes.
    slots_.stop();
    if (!was_started) {
        fail_queued(errc::shutting_down, shut_down_before_start());
        for (slot_id s = 0; s < workers_.size(); ++s) {
            workers_[s].child.retire();
        }
    }
    settle(now);
}

void pool_core::stop(time_point now) {
    if (!phase_.stop()) {
        return;
    }
    heartbeat_.stop();
    memory_.stop();
    slots_.stop();
    for (const task_id id : tasks_.ids()) {
        const std::string what = tasks_.describe(id);
        if (const auto slot = tasks_.find(id)->slot) {
            tasks_.drop_sent(*slot);
        }
        complete(id, boost::asio::error::operation_aborted,
                 {.diagnostics = {.summary = cancelled_with_pool(what)}});
    }
    for (slot_id s = 0; s < workers_.size(); ++s) {
        if (workers_[s].child.state() != child_state::stopped) {
            stop_worker(s, stop_reason::pool_stop, true, now);  // one in backoff is retired
        }
    }
    check_finished(now);
}

void pool_core::fail_queued(boost::system::error_code error, const std::string& summary) {
    for (const task_id id : tasks_.queued_ids()) {
        complete(id, error, {.diagnostics = {.summary = summary}});
    }
    tasks_.clear_queue();
}

}  // namespace torchpool::core
