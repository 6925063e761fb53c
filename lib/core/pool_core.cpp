#include "pool_core.hpp"

#include <torchpool/error.hpp>

#include <boost/asio/error.hpp>

#include <algorithm>

#include <signal.h>

namespace torchpool::core {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

namespace {

// How often the pool looks for workers too old to keep and workers idle long enough to
// shrink the pool: a tenth of the shorter of the two times, at least 10 ms.
clock::duration housekeeping_period(const pool_params& p) {
    milliseconds shortest = p.idle_timeout;
    if (p.recycle.max_age.count() > 0) {
        shortest = std::min(shortest, p.recycle.max_age);
    }
    return std::max(milliseconds{10}, shortest / 10);
}

}  // namespace

pool_core::pool_core(const pool_params& params, process_probe probe)
    : params_(params),
      probe_(std::move(probe)),
      report_(static_cast<bool>(params.on_worker_event), actions_),
      restart_(params),
      tasks_(slot_capacity(params)),
      workers_(params, tasks_),
      heartbeat_(slot_capacity(params), params.heartbeat_interval, params.heartbeat_timeout),
      memory_(slot_capacity(params), params.memory),
      sizing_(params),
      random_(params.seed ^ 0x5bd1e995u),
      server_(params, report_, actions_) {}

worker_state pool_core::state_of(slot_id slot) const {
    return workers_.state_of(slot);
}

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
    for (const slot_id s : sizing_.start()) {
        wait_for_start(s, now);
    }
    if (params_.recycle.max_age.count() > 0 || sizing_.min() < sizing_.max() ||
        params_.max_workers > params_.workers) {
        next_housekeeping_ = now + housekeeping_period(params_);
    }
    return true;
}

void pool_core::wait_for_start(slot_id s, time_point now) {
    workers_[s].child.wait_for_turn();
    workers_.gate().enqueue(s);
    start_waiting(now);
}

void pool_core::start_waiting(time_point now) {
    // Called after every event that may end a start; with nobody waiting (the common
    // case) it costs nothing.
    if (!workers_.gate().anyone_waiting() || phase_.stopping() ||
        (server_.enabled() && !server_.ready())) {
        return;
    }
    while (const auto s = workers_.gate().next()) {
        begin_start(*s, now);
    }
}

void pool_core::begin_start(slot_id s, time_point now) {
    auto& w = workers_[s];
    if (w.child.ever_started()) {
        ++report_.counters.restarts;
    }
    tasks_.drop_sent(s);
    w.channel_closed.reset();
    w.last_sample.reset();
    w.sampled_at = {};
    w.recycle_reason.clear();
    w.retire_after_task = false;
    w.park_on_exit = false;
    w.tasks_done = 0;
    w.recycle_at = time_point::max();
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
    ++report_.counters.spawned;
    report_.event(worker_event::kind::started, s, pid,
                  "worker " + std::to_string(pid) + " started");
}

void pool_core::on_spawn_error(slot_id s, std::string why, time_point now) {
    ++report_.counters.failed_starts;
    workers_[s].child.count_failed_start();
    start_failed(std::move(why), now);
    after_exit(s, now);
    if (report_.events_wanted()) {
        report_.event(worker_event::kind::start_failed, s, 0,
                      "worker slot " + std::to_string(s) + " could not be started: " +
                          restart_.last_error() + describe_next_start(s, now));
    }
    settle(now);
}

void pool_core::note(std::string what) {
    report_.event(worker_event::kind::notice, 0, 0, std::move(what));
}

void pool_core::start_failed(std::string why, time_point now) {
    if (!restart_.start_failed(std::move(why), workers_.any_ready(), now)) {
        return;
    }
    report_.event(worker_event::kind::degraded, 0, 0,
                  "the pool is degraded: " + std::to_string(params_.spawn_failures_until_degraded) +
                      " starts in a row failed and no worker is ready, so tasks fail at once "
                      "until one is. Last start failure: " +
                      restart_.last_error());
    fail_queued(errc::spawn_failed,
                "No worker can be started, so the task was not run. Last start failure: " +
                    restart_.last_error());
}

time_point pool_core::restart_time(unsigned failures, bool counts, time_point now) {
    const auto d = restart_.next_start(failures, counts, now);
    if (d.paced) {
        ++report_.counters.paced_restarts;
    }
    if (d.pacing_began) {
        report_.event(worker_event::kind::notice, 0, 0,
                      "restart intensity reached: more than " +
                          std::to_string(restart_.intensity()) + " restarts in " +
                          format_duration(restart_.period()) +
                          " (pool_params::restart_limit), so further restarts are paced to "
                          "that rate");
    } else if (d.pacing_ended) {
        report_.event(worker_event::kind::notice, 0, 0,
                      "restarts are no longer paced: they came slower than the restart "
                      "intensity (pool_params::restart_limit) allows");
    }
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

// --- tasks -------------------------------------------------------------------------------

milliseconds pool_core::timeout_for(milliseconds requested) const {
    return requested.count() > 0 ? requested : params_.task_timeout;
}

void pool_core::submit(task_id id, std::string method, milliseconds timeout, time_point now) {
    auto& counters = report_.counters;
    ++counters.submitted;
    switch (admit(phase_.admitting(), restart_.degraded(), tasks_.queued(), params_.queue_limit)) {
        case admission::shutting_down:
            ++counters.rejected;
            complete(id, errc::shutting_down,
                     {.diagnostics = {.summary = "The pool is shutting down, so task '" + method +
                                                 "' was not run."}});
            return;
        case admission::degraded:
            ++counters.spawn_failed;
            complete(id, errc::spawn_failed,
                     {.diagnostics = {.summary = "No worker can be started, so task '" + method +
                                                 "' was not run. Last start failure: " +
                                                 restart_.last_error()}});
            return;
        case admission::queue_full:
            ++counters.overloaded;
            complete(id, errc::overloaded,
                     {.diagnostics = {.summary = "The queue already holds " +
                                                 std::to_string(tasks_.queued()) +
                                                 " tasks (pool_params::queue_limit), so task '" +
                                                 method + "' was not run."}});
            return;
        case admission::admitted:
            break;
    }
    tasks_.add(id, std::move(method), timeout, now);
    dispatch(now);
}

void pool_core::reject(task_id id, boost::system::error_code error, std::string summary) {
    ++report_.counters.submitted;
    ++report_.counters.rejected;
    complete(id, error, {.diagnostics = {.summary = std::move(summary)}});
}

void pool_core::dispatch(time_point now) {
    while (tasks_.queued() > 0) {
        const auto target =
            workers_.dispatch().pick([this](slot_id s) -> std::optional<std::size_t> {
                const auto& sent = tasks_.sent(s);
                if (sent.empty() || workers_[s].child.state() != child_state::running) {
                    return std::nullopt;  // not busy
                }
                return sent.size();
            });
        if (!target) {
            break;
        }
        if (tasks_.sent(*target).empty()) {
            workers_[*target].task_start = now;  // it starts now, rather than after others
        }
        actions_.push_back(send_request_action{*target, tasks_.send_next(*target)});
    }
    if (tasks_.queued() > 0) {
        maybe_grow(now);
    }
}

void pool_core::complete(task_id id, boost::system::error_code error, response result) {
    actions_.push_back(complete_action{id, error, std::make_shared<response>(std::move(result))});
}

task_diagnostics pool_core::worker_diagnostics(slot_id s, time_point now, bool alive,
                                               bool stuck) const {
    const auto& w = workers_[s];
    task_diagnostics d;
    d.worker_pid = w.child.pid();
    if (alive && d.worker_pid > 0) {
        // What it is doing first: reading its memory takes the kernel longer.
        if (stuck && probe_.activity) {
            d.activity = probe_.activity(d.worker_pid);
        }
        if (probe_.memory) {
            d.memory = probe_.memory(d.worker_pid);
        }
    }
    d.worker_uptime = duration_cast<milliseconds>(now - w.child.process_start());
    if (!tasks_.sent(s).empty()) {
        d.task_run_time = duration_cast<milliseconds>(now - w.task_start);
    }
    d.log_tail = w.child.log().text();
    return d;
}

void pool_core::cancel_task(task_id id, boost::asio::cancellation_type type, time_point now) {
    using boost::asio::cancellation_type;
    const auto* t = tasks_.find(id);
    if (!t) {
        return;  // already completed; the cancellation raced with the completion
    }
    const auto wanted =
        cancellation_type::terminal | cancellation_type::partial | cancellation_type::total;
    auto& counters = report_.counters;
    if (!t->slot) {
        if ((type & wanted) == cancellation_type::none) {
            return;
        }
        std::string summary = cancelled_in_queue(tasks_.describe(id));
        tasks_.forget(id);
        ++counters.cancelled;
        complete(id, boost::asio::error::operation_aborted,
                 {.diagnostics = {.summary = std::move(summary)}});
        settle(now);
        return;
    }
    const slot_id s = *t->slot;
    if (tasks_.running(s) != id) {
        // Sent ahead, not started: the worker is told, and its reply will be dropped.
        if ((type & wanted) == cancellation_type::none) {
            return;
        }
        std::string summary = cancelled_before_start(tasks_.describe(id));
        tasks_.forget(id);
        tasks_.abandon(s, id);
        ++counters.cancelled;
        actions_.push_back(send_cancel_action{s, id});
        complete(id, boost::asio::error::operation_aborted,
                 {.diagnostics = {.summary = std::move(summary)}});
        return;
    }
    if ((type & cancellation_type::terminal) == cancellation_type::none) {
        return;  // a running task can only be abandoned by killing its worker
    }
    const int pid = workers_[s].child.pid();
    auto d = worker_diagnostics(s, now, true, true);
    d.summary = cancelled_while_running(tasks_.describe(id), d);
    tasks_.forget(id);
    ++counters.cancelled;
    complete(id, boost::asio::error::operation_aborted,
             {.worker_pid = pid, .diagnostics = std::move(d)});
    stop_worker(s, stop_reason::cancelled, true, now);
    settle(now);
}

void pool_core::on_deadline(task_id id, time_point now) {
    const auto* t = tasks_.find(id);
    const auto waited = duration_cast<milliseconds>(now - t->submitted);
    const std::optional<slot_id> slot = t->slot;
    ++report_.counters.timed_out;
    if (!slot) {
        std::string summary = deadline_in_queue(tasks_.describe(id), waited);
        tasks_.forget(id);
        complete(id, errc::timeout, {.diagnostics = {.summary = std::move(summary)}});
        return;
    }
    const int pid = workers_[*slot].child.pid();
    if (tasks_.running(*slot) != id) {
        // Sent ahead and not started: dropped without disturbing the worker.
        std::string summary = deadline_before_start(tasks_.describe(id), waited, pid);
        tasks_.forget(id);
        tasks_.abandon(*slot, id);
        complete(id, errc::timeout,
                 {.worker_pid = pid, .diagnostics = {.summary = std::move(summary)}});
        return;
    }
    auto d = worker_diagnostics(*slot, now, true, true);
    d.summary = deadline_while_running(tasks_.describe(id), waited, d);
    tasks_.forget(id);
    complete(id, errc::timeout, {.worker_pid = pid, .diagnostics = std::move(d)});
    stop_worker(*slot, stop_reason::deadline, false, now);
}

// --- messages from workers ---------------------------------------------------------------

void pool_core::on_message(slot_id s, wire::message&& msg, time_point now) {
    const auto state = workers_[s].child.state();
    if (state == child_state::stopping || state == child_state::stopped) {
        return;  // it is being stopped; what it still says no longer matters
    }
    if (auto* hello = std::get_if<wire::hello_msg>(&msg)) {
        on_hello(s, *hello, now);
    } else if (auto* reply = std::get_if<wire::reply_msg>(&msg)) {
        on_reply(s, std::move(*reply), now);
    } else if (auto* beat = std::get_if<wire::heartbeat_msg>(&msg)) {
        on_heartbeat(s, *beat, now);
    } else {
        on_protocol_error(s,
                          std::string("sent a ") + wire::message_name(msg) +
                              " message, which only the pool may send",
                          now);
    }
}

void pool_core::on_hello(slot_id s, const wire::hello_msg& hello, time_point now) {
    auto& w = workers_[s];
    if (w.child.state() != child_state::starting) {
        on_protocol_error(s, "sent a second hello message", now);
        return;
    }
    if (hello.protocol_version != wire::protocol_version) {
        on_protocol_error(s,
                          "sent hello with protocol version " +
                              std::to_string(hello.protocol_version) + " (this pool speaks " +
                              std::to_string(wire::protocol_version) + ")",
                          now);
        return;
    }
    w.child.became_ready(now);
    heartbeat_.ready(s,
                     std::find(hello.capabilities.begin(), hello.capabilities.end(),
                               wire::answers_heartbeats) != hello.capabilities.end(),
                     now);
    w.idle_since = now;
    if (params_.recycle.max_age.count() > 0) {
        const double spread =
            1.0 + std::clamp(params_.recycle.jitter, 0.0, 1.0) * (2.0 * random_.uniform() - 1.0);
        w.recycle_at = now + std::chrono::duration_cast<clock::duration>(
                                 params_.recycle.max_age * spread);
    }
    if (const auto old = sizing_.replaces(s)) {
        sizing_.handed_over(s);
        hand_over(*old, now);
    }
    if (restart_.start_succeeded(now)) {
        report_.event(worker_event::kind::recovered, s, w.child.pid(),
                      "the pool has recovered: worker " + std::to_string(w.child.pid()) +
                          " started and is ready, so tasks are accepted again");
    }
    if (report_.events_wanted()) {
        report_.event(worker_event::kind::ready, s, w.child.pid(),
                      "worker " + std::to_string(w.child.pid()) + " is ready, " +
                          format_elapsed(w.child.process_start(), now) + " after it started");
    }
    dispatch(now);
    settle(now);
}

void pool_core::on_reply(slot_id s, wire::reply_msg&& reply, time_point now) {
    auto& w = workers_[s];
    const auto& sent = tasks_.sent(s);
    if (w.child.state() != child_state::running || sent.empty() || sent.front().id != reply.id) {
        on_protocol_error(
            s,
            "sent a reply for task " + std::to_string(reply.id) +
                (sent.empty() ? std::string(" while it runs no task")
                              : " while it runs task " + std::to_string(sent.front().id)),
            now);
        return;
    }
    w.child.healthy();
    heartbeat_.active(s, now);
    ++w.tasks_done;
    const auto done = tasks_.answered(s);
    if (sent.empty()) {
        workers_.dispatch().became_idle(s);
    } else {
        w.task_start = now;  // the next task sent ahead starts now
    }
    if (!done.abandoned) {
        complete_reply(s, done.id, std::move(reply), now);
    }
    if (memory_.enabled() && sent.empty() &&
        (!w.last_sample || now - w.sampled_at >= memory_.params().sample_interval)) {
        // What a task left behind is seen once it ends, not only while tasks run; at most
        // once per interval per worker.
        check_memory(s, now);
    }
    if (params_.recycle.max_tasks > 0 && w.tasks_done == params_.recycle.max_tasks) {
        want_recycle(s,
                     "it answered " + std::to_string(w.tasks_done) +
                         " tasks (pool_params::recycle.max_tasks)",
                     now);
    }
    if (sent.empty()) {
        w.idle_since = now;
        if (w.retire_after_task && w.child.state() == child_state::running) {
            leave(s, stop_reason::recycle, w.park_on_exit, now);
        }
    }
    dispatch(now);
    settle(now);
}

void pool_core::complete_reply(slot_id s, task_id id, wire::reply_msg&& reply, time_point now) {
    const int pid = workers_[s].child.pid();
    response result{.worker_pid = pid};
    boost::system::error_code error;
    if (reply.ok) {
        ++report_.counters.succeeded;
        result.payload = std::move(reply.payload);
        result.tensors = std::move(reply.tensors);
    } else {
        ++report_.counters.task_failed;
        error = errc::task_failed;
        auto& d = result.diagnostics;
        d = worker_diagnostics(s, now, false);  // it stays up; its memory is not the point
        d.summary = "Worker " + std::to_string(pid) + " reported an error in " +
                    tasks_.describe(id) + ": " + reply.error_type + ": " + reply.error_message;
        d.error_type = std::move(reply.error_type);
        d.error_message = std::move(reply.error_message);
    }
    tasks_.forget(id);
    complete(id, error, std::move(result));
}

void pool_core::on_protocol_error(slot_id s, std::string what, time_point now) {
    auto& w = workers_[s];
    const auto state = w.child.state();
    if (state == child_state::stopping || state == child_state::stopped ||
        state == child_state::backoff) {
        return;
    }
    const int pid = w.child.pid();
    if (state == child_state::running) {
        w.child.count_failure(now, params_.restart_backoff.reset_after);
    }
    if (auto id = tasks_.running(s)) {
        auto d = worker_diagnostics(s, now, true);
        d.summary = protocol_error_while_running(tasks_.describe(*id), what, d);
        ++report_.counters.protocol_errors;
        tasks_.forget(*id);
        complete(*id, errc::protocol_error, {.worker_pid = pid, .diagnostics = std::move(d)});
    }
    if (state == child_state::starting) {
        ++report_.counters.failed_starts;
        w.child.count_failed_start();
        start_failed("worker " + std::to_string(pid) + " " + what + " before it was ready.", now);
    }
    stop_worker(s, stop_reason::protocol, true, now);
    settle(now);
}

void pool_core::on_channel_closed(slot_id s, std::string what, time_point now) {
    auto& w = workers_[s];
    const auto state = w.child.state();
    if (state != child_state::starting && state != child_state::running) {
        return;
    }
    // Usually the worker is exiting and its exit status is about to be reaped; wait for it,
    // so the caller learns how it died rather than just that its channel closed.
    w.channel_closed = std::move(what);
    w.child.set_timer(std::min(w.child.timer(), now + params_.stop_grace));
}

void pool_core::on_log(slot_id s, std::string_view bytes) {
    workers_[s].child.append_log(bytes);
}

// --- exits and stops ---------------------------------------------------------------------

void pool_core::on_exit(slot_id s, const exit_status& status, time_point now) {
    auto& w = workers_[s];
    auto& counters = report_.counters;
    const worker_state was = workers_.state_of(s);
    if (was == worker_state::backoff || was == worker_state::stopped) {
        return;  // no process; cannot happen, but must not restart anything
    }
    const std::string how = describe_exit(status);
    const int pid = w.child.pid();
    const std::string who = "worker " + std::to_string(pid);
    if (status.oom_killed) {
        ++counters.memory_kills;
        report_.event(worker_event::kind::memory_limit, s, pid,
                      who + " was killed by the kernel's OOM killer at the limit of its memory "
                            "cgroup, " +
                          format_mib(memory_.params().hard_limit_bytes));
    }
    switch (was) {
        case worker_state::starting:
            ++counters.failed_starts;
            w.child.count_failed_start();
            start_failed(who + " " + how + " before it was ready, " +
                             format_elapsed(w.child.process_start(), now) + " after it started." +
                             describe_output(w.child.log().text()),
                         now);
            break;
        case worker_state::idle:
            w.child.count_failure(now, params_.restart_backoff.reset_after);
            ++(status.signal ? counters.deaths_by_signal : counters.deaths_by_exit);
            break;
        case worker_state::busy: {
            w.child.count_failure(now, params_.restart_backoff.reset_after);
            ++(status.signal ? counters.deaths_by_signal : counters.deaths_by_exit);
            const auto id = tasks_.running(s);
            if (!id) {
                tasks_.release(s);  // it was running a task nobody waits for any more
                break;
            }
            if (status.oom_killed) {
                fail_oom_killed(s, *id, how, now);
                tasks_.release(s);
                break;
            }
            auto d = worker_diagnostics(s, now, false);
            d.exit_code = status.exit_code;
            d.signal = status.signal;
            d.core_dumped = status.core_dumped;
            d.summary = died_while_running(tasks_.describe(*id), how, d) +
                        oom_evidence(status, w.last_sample, memory_.params());
            ++counters.worker_died;
            tasks_.forget(*id);
            tasks_.release(s);
            complete(*id, errc::worker_died, {.worker_pid = pid, .diagnostics = std::move(d)});
            break;
        }
        case worker_state::stopping:
            if (w.child.reason() == stop_reason::spawn_timeout) {
                ++counters.failed_starts;
                w.child.count_failed_start();
                start_failed(who + " did not become ready within " +
                                 format_duration(params_.spawn_timeout) +
                                 " (pool_params::spawn_timeout) and was killed." +
                                 describe_output(w.child.log().text()),
                             now);
            }
            break;
        case worker_state::backoff:
        case worker_state::stopped:
            break;
    }
    after_exit(s, now);
    if (report_.events_wanted()) {
        report_.event(worker_event::kind::exited, s, pid,
                      who + " " + how + " while " + to_string(was) + describe_next_start(s, now));
    }
    settle(now);
}

std::string pool_core::describe_next_start(slot_id s, time_point now) const {
    const auto& child = workers_[s].child;
    if (child.state() == child_state::starting) {
        return "; restarted at once";
    }
    if (child.state() != child_state::backoff) {
        return {};
    }
    return child.timer() == time_point::max()
               ? "; restarting when its turn to start comes"
               : "; restarting in " + format_elapsed(now, child.timer());
}

void pool_core::after_exit(slot_id s, time_point now) {
    auto& w = workers_[s];
    w.child.process_gone();
    heartbeat_.gone(s);
    tasks_.drop_sent(s);
    const bool no_more_work = phase_.draining() && tasks_.queued() == 0;
    if (phase_.stopping() || phase_.finished() || no_more_work) {
        w.child.retire();
        return;
    }
    if (w.park_on_exit || sizing_.replacement_of(s)) {
        // It leaves the pool (shrinking, or replaced); a replacement still starting for it
        // takes its place as an ordinary worker.
        if (const auto r = sizing_.replacement_of(s)) {
            sizing_.handed_over(*r);
        }
        w.park_on_exit = false;
        w.child.retire();
        sizing_.park(s);
        return;
    }
    // A worker replaced on purpose does not count against the restart intensity.
    const bool planned =
        w.child.reason() == stop_reason::recycle || w.child.reason() == stop_reason::shrink;
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
        w.child.set_timer(time_point::max());
        if (reason == stop_reason::spawn_timeout) {
            // The fork server has not answered in time, so it is stuck: replacing it asks
            // again for this worker (requeue_fork_requests).
            server_.kill_because("did not answer a request for a worker within " +
                                     format_duration(params_.spawn_timeout) +
                                     " (pool_params::spawn_timeout) and was killed",
                                 now);
            return;
        }
        // A worker that the fork server still hands over is killed by the driver.
        w.child.retire();
        return;
    }
    tasks_.release(s);
    const bool already_stopping = w.child.state() == child_state::stopping;
    const stop_step step = w.child.stop(reason, force, now, params_.stop_grace);
    if (step != stop_step::none && !already_stopping && reason != stop_reason::shutdown &&
        reason != stop_reason::pool_stop && reason != stop_reason::recycle &&
        reason != stop_reason::shrink) {
        ++report_.counters.killed_by_pool;
    }
    switch (step) {
        case stop_step::none:
            break;
        case stop_step::kill:
            actions_.push_back(signal_action{s, SIGKILL});
            break;
        case stop_step::ask:
            if (reason == stop_reason::shutdown || reason == stop_reason::recycle ||
                reason == stop_reason::shrink) {
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
    heartbeat_.stop();
    memory_.stop();
    next_housekeeping_.reset();
    if (!was_started) {
        fail_queued(errc::shutting_down, "The pool was shut down before it started.");
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
    next_housekeeping_.reset();
    for (const task_id id : tasks_.ids()) {
        const std::string what = tasks_.describe(id);
        if (const auto slot = tasks_.find(id)->slot) {
            tasks_.drop_sent(*slot);
        }
        tasks_.forget(id);
        ++report_.counters.cancelled;
        complete(
            id, boost::asio::error::operation_aborted,
            {.diagnostics = {.summary = "The pool was cancelled before " + what + " finished."}});
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
        tasks_.forget(id);
        ++(error == errc::spawn_failed ? report_.counters.spawn_failed : report_.counters.rejected);
        complete(id, error, {.diagnostics = {.summary = summary}});
    }
    tasks_.clear_queue();
}

// --- after every event -------------------------------------------------------------------

void pool_core::settle(time_point now) {
    // Each check is cheap and almost always false: a running pool with nobody waiting.
    if (phase_.draining()) {
        maybe_finish_drain(now);
    }
    if (phase_.ending()) {
        check_finished(now);
    }
    if (workers_.gate().anyone_waiting()) {
        start_waiting(now);  // a start may have ended, making room for the next
    }
}

void pool_core::maybe_finish_drain(time_point now) {
    if (!phase_.draining() || tasks_.queued() > 0) {
        return;
    }
    for (slot_id s = 0; s < workers_.size(); ++s) {
        switch (workers_.state_of(s)) {
            case worker_state::backoff:
                workers_[s].child.retire();
                break;
            case worker_state::idle:
            case worker_state::starting:
                stop_worker(s, stop_reason::shutdown, false, now);
                break;
            case worker_state::busy:
            case worker_state::stopping:
            case worker_state::stopped:
                break;
        }
    }
}

void pool_core::check_finished(time_point now) {
    if (!phase_.ending() || !tasks_.empty() || !workers_.all_stopped()) {
        return;
    }
    if (server_.enabled() && !server_.stopped()) {
        // Every worker is gone; the fork server goes last (its exit comes back here). Even
        // on stop() it is asked first, not killed: it then answers the fork request it may
        // be working on before it exits, so the worker it made is handed over (and killed)
        // rather than left as a child nobody knows; SIGKILL follows after stop_grace.
        server_.stop(false, now);
        return;
    }
    phase_.finish();
    actions_.push_back(run_finished_action{});
}

// --- time --------------------------------------------------------------------------------

void pool_core::on_timer(time_point now) {
    while (const auto id = tasks_.due(now)) {
        on_deadline(*id, now);
    }
    server_.on_timer(phase_.stopping(), now);
    if (const auto sweep = heartbeat_.next_sweep(); sweep && *sweep <= now) {
        sweep_heartbeats(now);
    }
    if (const auto sample = memory_.next_sample(); sample && *sample <= now) {
        sample_memory(now);
    }
    if (next_housekeeping_ && *next_housekeeping_ <= now) {
        housekeeping(now);
    }
    // Worker timers that are due; handling one may set others, so take the due ones first.
    for (const slot_id s : workers_.due(now)) {
        if (workers_[s].child.timer() <= now) {
            on_worker_timer(s, now);
        }
    }
    settle(now);
}

void pool_core::on_heartbeat(slot_id s, const wire::heartbeat_msg& beat, time_point now) {
    if (heartbeat_.answered(s, beat.sequence, now) &&
        workers_[s].child.state() == child_state::running && tasks_.sent(s).empty()) {
        workers_.dispatch().became_idle(s);  // it may take tasks again
        dispatch(now);
    }
}

void pool_core::sweep_heartbeats(time_point now) {
    auto result = heartbeat_.sweep(now, [this](slot_id s) {
        return workers_[s].child.state() == child_state::running && tasks_.sent(s).empty();
    });
    for (const auto& ping : result.pings) {
        workers_.dispatch().not_idle(ping.slot);  // no task until it answers
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
    ++report_.counters.unresponsive;
    const auto d = worker_diagnostics(s, now, true, true);
    report_.event(worker_event::kind::unresponsive, s, d.worker_pid,
                  "worker " + std::to_string(d.worker_pid) + " did not answer a heartbeat within " +
                      format_duration(heartbeat_.timeout()) +
                      " while idle (pool_params::heartbeat_timeout); it is stopped and replaced" +
                      describe_memory(d.memory) + "." + describe_activity(d.activity));
    stop_worker(s, stop_reason::unresponsive, false, now);
}

void pool_core::sample_memory(time_point now) {
    const auto s = memory_.due(now, [this](slot_id slot) {
        return workers_[slot].child.state() == child_state::running && !tasks_.sent(slot).empty();
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
    if (!m) {
        return;
    }
    w.last_sample = m;
    switch (memory_.judge(m->private_bytes)) {
        case memory_watch::verdict::fine:
            break;
        case memory_watch::verdict::over_soft:
            want_recycle(s,
                         "it held " + format_mib(m->private_bytes) +
                             " of its own, over its soft limit of " +
                             format_mib(memory_.params().soft_limit_bytes) +
                             " (pool_params::memory.soft_limit_bytes)",
                         now);
            break;
        case memory_watch::verdict::over_hard:
            memory_kill(s, *m, now);
            break;
    }
}

void pool_core::memory_kill(slot_id s, const worker_memory& m, time_point now) {
    ++report_.counters.memory_kills;
    const int pid = workers_[s].child.pid();
    const std::string figures = format_mib(m.private_bytes) + " of its own, over its hard limit of " +
                                format_mib(memory_.params().hard_limit_bytes) +
                                " (pool_params::memory.hard_limit_bytes)";
    // The event first: the host hears of the kill no later than the task's caller does.
    report_.event(worker_event::kind::memory_limit, s, pid,
                  "worker " + std::to_string(pid) + " held " + figures +
                      "; it was killed and will be replaced");
    if (const auto id = tasks_.running(s)) {
        auto d = worker_diagnostics(s, now, false);
        d.memory = m;
        d.summary = "Worker " + std::to_string(pid) + " held " + figures + " while running " +
                    tasks_.describe(*id) + ", " + format_duration(d.task_run_time) +
                    " into it; it was killed and will be replaced.";
        ++report_.counters.memory_limit;
        tasks_.forget(*id);
        complete(*id, errc::memory_limit, {.worker_pid = pid, .diagnostics = std::move(d)});
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
    ++report_.counters.recycled;
    if (const auto spare = sizing_.take_parked(true)) {
        sizing_.replacing(*spare, s);
        report_.event(worker_event::kind::recycled, s, w.child.pid(),
                      "worker " + std::to_string(w.child.pid()) + " is being replaced, since " +
                          w.recycle_reason + "; it leaves once its replacement is ready");
        wait_for_start(*spare, now);
        return;
    }
    // No spare slot (the pool is at its largest): replaced in place, after its task.
    report_.event(worker_event::kind::recycled, s, w.child.pid(),
                  "worker " + std::to_string(w.child.pid()) + " is being replaced, since " +
                      w.recycle_reason + "; it is restarted once its task is done");
    w.retire_after_task = true;
    w.park_on_exit = false;
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
    w.park_on_exit = true;
    if (w.child.state() == child_state::running && !tasks_.sent(old).empty()) {
        w.retire_after_task = true;  // its task finishes first
    } else {
        leave(old, stop_reason::recycle, true, now);
    }
    resume_recycling(now);
}

void pool_core::leave(slot_id s, stop_reason why, bool park, time_point now) {
    auto& w = workers_[s];
    w.retire_after_task = false;
    w.park_on_exit = park;
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
            const bool busy = w.child.state() == child_state::running && !tasks_.sent(s).empty();
            if (!busy) {
                leave(s, stop_reason::shrink, true, now);
            } else if (busy_too) {
                sizing_.leaving(s);
                workers_[s].retire_after_task = true;
                workers_[s].park_on_exit = true;
            }
        }
    }
    report_.event(worker_event::kind::notice, 0, 0,
                  "the pool was resized to " + std::to_string(n) + " workers (pool::resize)");
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
            want_recycle(s, "it has been ready for " + format_elapsed(w.child.ready_since(), now) +
                                " (pool_params::recycle.max_age)",
                         now);
        }
        const bool idle = tasks_.sent(s).empty() && !heartbeat_.waiting(s);
        if (idle && now - w.idle_since >= sizing_.idle_timeout() &&
            sizing_.size() > sizing_.min() && !sizing_.is_leaving(s) && !sizing_.replaces(s) &&
            w.recycle_reason.empty()) {
            leave(s, stop_reason::shrink, true, now);
        }
    }
}

void pool_core::maybe_grow(time_point now) {
    if (sizing_.size() >= sizing_.max() || !phase_.admitting() || restart_.degraded()) {
        return;
    }
    // One more worker per task that waits beyond those already starting.
    while (tasks_.queued() > workers_.gate().in_progress() + workers_.gate().waiting_count()) {
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
    d.summary = "Worker " + std::to_string(pid) + " " + how + " while running " +
                tasks_.describe(id) + ", " + format_duration(d.task_run_time) +
                " into it: the kernel's OOM killer killed it when it reached the limit of its "
                "memory cgroup, " +
                format_mib(memory_.params().hard_limit_bytes) +
                " (pool_params::memory.hard_limit_bytes)." + describe_output(d.log_tail);
    ++report_.counters.memory_limit;
    tasks_.forget(id);
    complete(id, errc::memory_limit, {.worker_pid = pid, .diagnostics = std::move(d)});
}

void pool_core::on_worker_timer(slot_id s, time_point now) {
    auto& w = workers_[s];
    const auto state = w.child.state();
    if (w.channel_closed && (state == child_state::starting || state == child_state::running)) {
        on_protocol_error(s, *w.channel_closed + " but did not exit", now);
        return;
    }
    switch (state) {
        case child_state::starting:
            stop_worker(s, stop_reason::spawn_timeout, true, now);
            break;
        case child_state::backoff:
            wait_for_start(s, now);
            break;
        case child_state::stopping:
            stop_worker(s, w.child.reason(), true, now);
            break;
        default:
            w.child.set_timer(time_point::max());
            break;
    }
}

pool_stats pool_core::stats() const {
    pool_stats st = report_.counters;
    workers_.count(st);
    st.queue_depth = tasks_.queued();
    st.degraded = restart_.degraded();
    st.restarts_paced = restart_.pacing();
    // Parked slots (in the stopped state) are not workers.
    st.workers_stopped -= std::min(st.workers_stopped, sizing_.slots() - sizing_.in_use());
    st.workers_target = sizing_.size();
    st.intra_op_threads = params_.intra_op_threads;
    st.inter_op_threads = params_.inter_op_threads;
    st.fork_server_pid = server_.child().pid();
    st.fork_server_ready = server_.ready();
    st.last_start_error = restart_.last_error();
    return st;
}

}  // namespace torchpool::core
