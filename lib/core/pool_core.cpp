#include "pool_core.hpp"

#include <torchpool/error.hpp>

#include <boost/asio/error.hpp>

#include <algorithm>
#include <cstdio>

#include <signal.h>

namespace torchpool::core {

namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

std::string format_duration(milliseconds d) {
    char text[32];
    if (d < milliseconds{1000}) {
        std::snprintf(text, sizeof text, "%lld ms", static_cast<long long>(d.count()));
    } else {
        std::snprintf(text, sizeof text, "%.1f s", static_cast<double>(d.count()) / 1000.0);
    }
    return text;
}


std::string describe_memory(std::optional<std::uint64_t> bytes) {
    if (!bytes) {
        return {};
    }
    char text[48];
    std::snprintf(text, sizeof text, "; its peak memory was %.1f MiB",
                  static_cast<double>(*bytes) / (1024.0 * 1024.0));
    return text;
}

std::string last_line(const std::string& log) {
    std::string_view view = log;
    while (!view.empty() && (view.back() == '\n' || view.back() == '\r')) {
        view.remove_suffix(1);
    }
    if (auto nl = view.rfind('\n'); nl != std::string_view::npos) {
        view.remove_prefix(nl + 1);
    }
    return std::string(view);
}

}  // namespace

std::string describe_exit(const exit_status& status) {
    if (status.signal) {
        std::string text = "was killed by signal " + signal_name(*status.signal);
        if (status.core_dumped) {
            text += " (core dumped)";
        }
        return text;
    }
    if (status.exit_code) {
        return "exited with code " + std::to_string(*status.exit_code);
    }
    return "ended";
}

const char* to_string(worker_state s) noexcept {
    switch (s) {
        case worker_state::backoff:
            return "backoff";
        case worker_state::starting:
            return "starting";
        case worker_state::idle:
            return "idle";
        case worker_state::busy:
            return "busy";
        case worker_state::stopping:
            return "stopping";
        case worker_state::stopped:
            return "stopped";
    }
    return "unknown";
}

pool_core::pool_core(const pool_params& params) : params_(params), random_(params.seed) {
    slots_.reserve(params.workers);
    for (std::size_t i = 0; i < params.workers; ++i) {
        slots_.emplace_back(params.log_tail_bytes);
    }
    idle_.reserve(params.workers);
    if (params.worker.start == start_mode::fork_server) {
        server_.state = server_state::backoff;
        server_.log = log_tail(params.log_tail_bytes);
    }
}

bool pool_core::start(time_point now) {
    if (started_ || draining_ || stopping_) {
        return false;
    }
    started_ = true;
    if (fork_server_mode()) {
        start_server(now);
    }
    for (slot_id s = 0; s < slots_.size(); ++s) {
        spawn(s, now);
    }
    return true;
}

void pool_core::spawn(slot_id s, time_point now) {
    auto& w = slots_[s];
    w.state = worker_state::backoff;
    set_timer(s, time_point::max());
    if (!w.waiting) {
        w.waiting = true;
        start_queue_.push_back(s);
    }
    start_waiting(now);
}

std::size_t pool_core::starts_in_progress() const {
    return static_cast<std::size_t>(std::count_if(slots_.begin(), slots_.end(), [](const slot& w) {
        return w.state == worker_state::starting;
    }));
}

void pool_core::start_waiting(time_point now) {
    // Called after every event that may end a start; with nobody waiting (the common
    // case) it costs nothing.
    if (start_queue_.empty() || stopping_ ||
        (fork_server_mode() && server_.state != server_state::ready)) {
        return;
    }
    const std::size_t limit = params_.max_concurrent_starts;
    std::size_t in_progress = limit > 0 ? starts_in_progress() : 0;
    while (!start_queue_.empty() && (limit == 0 || in_progress < limit)) {
        const slot_id s = start_queue_.front();
        start_queue_.pop_front();
        auto& w = slots_[s];
        if (!w.waiting) {
            continue;  // stopped since it queued
        }
        w.waiting = false;
        begin_start(s, now);
        ++in_progress;
    }
}

void pool_core::begin_start(slot_id s, time_point now) {
    auto& w = slots_[s];
    if (w.ever_started) {
        ++counters_.restarts;
    }
    w.ever_started = true;
    w.state = worker_state::starting;
    w.pid = 0;
    w.sent.clear();
    w.reason = stop_reason::none;
    w.killed = false;
    w.channel_closed.reset();
    w.process_start = now;
    set_timer(s, now + params_.spawn_timeout);
    w.log.clear();
    if (fork_server_mode()) {
        actions_.push_back(fork_action{s});
    } else {
        actions_.push_back(spawn_action{s});
    }
}

bool pool_core::awaiting_fork(slot_id s) const {
    const auto& w = slots_.at(s);
    return fork_server_mode() && w.state == worker_state::starting && w.pid == 0;
}

void pool_core::start_server(time_point now) {
    if (server_.state == server_state::stopped || stopping_) {
        return;
    }
    server_.state = server_state::starting;
    server_.pid = 0;
    server_.killed = false;
    server_.asked_to_stop = false;
    server_.process_start = now;
    server_.timer = now + params_.spawn_timeout;
    server_.log.clear();
    ++counters_.fork_server_starts;
    actions_.push_back(start_server_action{});
}

void pool_core::stop_server(bool kill, time_point now) {
    if (server_.state == server_state::none || server_.state == server_state::stopped) {
        return;
    }
    if (server_.state == server_state::backoff) {
        server_.state = server_state::stopped;
        server_.timer = time_point::max();
        return;
    }
    if (server_.state == server_state::stopping && (server_.killed || !kill)) {
        return;
    }
    server_.state = server_state::stopping;
    if (kill) {
        server_.killed = true;
        server_.timer = time_point::max();
        actions_.push_back(stop_server_action{true});
    } else {
        server_.asked_to_stop = true;
        server_.timer = now + params_.stop_grace;
        actions_.push_back(stop_server_action{false});
    }
}

void pool_core::on_server_spawned(int pid, time_point now) {
    server_.pid = pid;
    server_.process_start = now;
    if (params_.on_worker_event) {
        actions_.push_back(notify_action{{worker_event::kind::fork_server_started, 0, pid,
                                          "fork server " + std::to_string(pid) + " started"}});
    }
}

void pool_core::on_server_spawn_error(std::string why, time_point now) {
    server_.kill_reason.clear();
    on_server_gone("the fork server could not be started: " + why, now);
}

void pool_core::on_server_hello(const wire::hello_msg& hello, time_point now) {
    if (server_.state != server_state::starting) {
        on_server_protocol_error(server_.state == server_state::ready
                                     ? "sent a second hello message"
                                     : "sent hello while it was being stopped",
                                 now);
        return;
    }
    if (hello.protocol_version != wire::protocol_version) {
        on_server_protocol_error(
            "sent hello with protocol version " + std::to_string(hello.protocol_version) +
                " (this pool speaks " + std::to_string(wire::protocol_version) + ")",
            now);
        return;
    }
    server_.state = server_state::ready;
    server_.timer = time_point::max();
    server_.failed_starts = 0;
    server_.failures = 0;
    if (params_.on_worker_event) {
        actions_.push_back(notify_action{
            {worker_event::kind::fork_server_ready, 0, server_.pid,
             "fork server " + std::to_string(server_.pid) + " is ready, " +
                 format_duration(duration_cast<milliseconds>(now - server_.process_start)) +
                 " after it started"}});
    }
    start_waiting(now);
    check_finished(now);
}

void pool_core::on_server_protocol_error(std::string what, time_point now) {
    if (server_.state == server_state::stopping || server_.state == server_state::stopped ||
        server_.state == server_state::none) {
        return;
    }
    server_.kill_reason = what + "; it was killed";
    ++counters_.protocol_errors;
    stop_server(true, now);
}

void pool_core::on_server_log(std::string_view bytes) {
    server_.log.append(bytes);
}

void pool_core::on_server_exit(const exit_status& status, time_point now) {
    const std::string log = server_.log.text();
    const std::string log_note = log.empty() ? std::string(" It wrote nothing to stdout or stderr.")
                                             : " Its last output line: \"" + last_line(log) + "\".";
    const std::string uptime =
        format_duration(duration_cast<milliseconds>(now - server_.process_start));
    std::string why = "the fork server (pid " + std::to_string(server_.pid) + ") ";
    if (!server_.kill_reason.empty()) {
        why += server_.kill_reason + ".";
    } else if (server_.state == server_state::starting) {
        why += describe_exit(status) + " before it was ready, " + uptime + " after it started.";
    } else {
        why += describe_exit(status) + " after " + uptime + ".";
    }
    on_server_gone(why + log_note, now);
}

void pool_core::on_server_gone(std::string why, time_point now) {
    const server_state was = server_.state;
    const int pid = server_.pid;
    const bool asked = server_.asked_to_stop;
    const bool unexpected = server_.kill_reason.empty() && !asked && !server_.killed;
    server_.pid = 0;
    server_.timer = time_point::max();
    server_.kill_reason.clear();
    server_.killed = false;
    server_.asked_to_stop = false;
    if (pid != 0 && params_.on_worker_event) {
        actions_.push_back(notify_action{{worker_event::kind::fork_server_exited, 0, pid, why}});
    }
    if (stopping_ || asked) {
        server_.state = server_state::stopped;  // the pool is done with it
        check_finished(now);
        return;
    }
    server_.state = server_state::backoff;  // before the requests wait for the next one
    requeue_fork_requests(now);
    if (was == server_state::ready && unexpected) {
        ++counters_.fork_server_deaths;
        ++server_.failures;
    } else if (was == server_state::starting || !unexpected) {
        count_failed_start(server_.failed_starts, why);
    }
    const auto delay = restart_delay(params_.restart_backoff,
                                     std::max(server_.failures, server_.failed_starts), random_);
    if (delay.count() == 0) {
        start_server(now);
    } else {
        server_.timer = now + delay;
    }
    check_finished(now);
}

// Workers asked of a fork server that is gone will never come: ask again, from the next one.
void pool_core::requeue_fork_requests(time_point now) {
    for (slot_id s = 0; s < slots_.size(); ++s) {
        if (awaiting_fork(s)) {
            spawn(s, now);
        }
    }
}

void pool_core::submit(task_id id, std::string method, milliseconds timeout, time_point now) {
    ++counters_.submitted;
    if (draining_ || stopping_) {
        ++counters_.rejected;
        complete(id, errc::shutting_down,
                 {.diagnostics = {.summary = "The pool is shutting down, so task '" + method +
                                             "' was not run."}});
        return;
    }
    if (degraded_) {
        ++counters_.spawn_failed;
        complete(id, errc::spawn_failed,
                 {.diagnostics = {.summary =
                                      "No worker can be started, so task '" + method +
                                      "' was not run. Last start failure: " + last_spawn_error_}});
        return;
    }
    if (queued_ >= params_.queue_limit) {
        ++counters_.overloaded;
        complete(id, errc::overloaded,
                 {.diagnostics = {.summary = "The queue already holds " + std::to_string(queued_) +
                                             " tasks (pool_params::queue_limit), so task '" +
                                             method + "' was not run."}});
        return;
    }
    task t{.method = std::move(method), .submitted = now};
    if (timeout.count() > 0) {
        t.deadline = now + timeout;
        deadlines_.emplace(t.deadline, id);
    }
    tasks_.emplace(id, std::move(t));
    queue_.push_back(id);
    ++queued_;
    dispatch(now);
}

milliseconds pool_core::timeout_for(milliseconds requested) const {
    return requested.count() > 0 ? requested : params_.task_timeout;
}

void pool_core::reject(task_id id, boost::system::error_code error, std::string summary) {
    ++counters_.submitted;
    ++counters_.rejected;
    complete(id, error, {.diagnostics = {.summary = std::move(summary)}});
}

void pool_core::dispatch(time_point now) {
    while (queued_ > 0) {
        const bool idle = !idle_.empty();
        const std::optional<slot_id> target = idle ? idle_.back() : prefetch_target();
        if (!target) {
            return;
        }
        task_id id = 0;
        for (;;) {
            id = queue_.front();
            queue_.pop_front();
            auto it = tasks_.find(id);
            if (it != tasks_.end() && !it->second.slot) {
                it->second.slot = *target;
                break;
            }
            // Otherwise it was cancelled or timed out while queued.
        }
        if (idle) {
            idle_.pop_back();
        }
        --queued_;
        auto& w = slots_[*target];
        if (w.sent.empty()) {
            w.state = worker_state::busy;
            w.task_start = now;
        }
        w.sent.push_back({id});
        actions_.push_back(send_request_action{*target, id});
    }
}

std::optional<slot_id> pool_core::prefetch_target() {
    if (params_.prefetch == 0) {
        return std::nullopt;
    }
    // Round robin over busy workers with room, so prefetched tasks spread evenly.
    for (std::size_t i = 0; i < slots_.size(); ++i) {
        const slot_id s = (prefetch_cursor_ + i) % slots_.size();
        const auto& w = slots_[s];
        if (w.state == worker_state::busy && w.sent.size() <= params_.prefetch) {
            prefetch_cursor_ = s + 1;
            return s;
        }
    }
    return std::nullopt;
}

std::optional<task_id> pool_core::running_task(const slot& w) const {
    if (w.sent.empty() || w.sent.front().abandoned) {
        return std::nullopt;
    }
    return w.sent.front().id;
}

void pool_core::release_sent(slot_id s) {
    auto& w = slots_[s];
    // The first was running and has been dealt with; the others never started, so they go
    // back to the head of the queue in their order.
    for (std::size_t i = w.sent.size(); i-- > 1;) {
        if (w.sent[i].abandoned) {
            continue;
        }
        const task_id id = w.sent[i].id;
        tasks_.at(id).slot.reset();
        queue_.push_front(id);
        ++queued_;
    }
    w.sent.clear();
}

void pool_core::complete(task_id id, boost::system::error_code error, response result) {
    actions_.push_back(complete_action{id, error, std::make_shared<response>(std::move(result))});
}

void pool_core::forget_task(task_id id) {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) {
        return;
    }
    if (it->second.deadline != time_point::max()) {
        deadlines_.erase({it->second.deadline, id});
    }
    if (!it->second.slot) {
        --queued_;
    }
    tasks_.erase(it);
}

std::string pool_core::describe_task(task_id id) const {
    auto it = tasks_.find(id);
    return "task " + std::to_string(id) +
           (it == tasks_.end() ? std::string() : " ('" + it->second.method + "')");
}

task_diagnostics pool_core::worker_diagnostics(const slot& w, time_point now) const {
    task_diagnostics d;
    d.worker_pid = w.pid;
    d.worker_uptime = duration_cast<milliseconds>(now - w.process_start);
    if (!w.sent.empty()) {
        d.task_run_time = duration_cast<milliseconds>(now - w.task_start);
    }
    d.log_tail = w.log.text();
    return d;
}

void pool_core::cancel_task(task_id id, boost::asio::cancellation_type type, time_point now) {
    using boost::asio::cancellation_type;
    auto it = tasks_.find(id);
    if (it == tasks_.end()) {
        return;  // already completed; the cancellation raced with the completion
    }
    const auto wanted =
        cancellation_type::terminal | cancellation_type::partial | cancellation_type::total;
    if (!it->second.slot) {
        if ((type & wanted) == cancellation_type::none) {
            return;
        }
        const std::string what = describe_task(id);
        forget_task(id);
        ++counters_.cancelled;
        complete(id, boost::asio::error::operation_aborted,
                 {.diagnostics = {.summary = "The caller cancelled " + what +
                                             " while it waited in the queue."}});
        maybe_finish_drain(now);
        check_finished(now);
        return;
    }
    const slot_id s = *it->second.slot;
    auto& w = slots_[s];
    if (running_task(w) != id) {
        // Prefetched, not started: the worker is told, and its reply will be dropped.
        if ((type & wanted) == cancellation_type::none) {
            return;
        }
        std::string what = describe_task(id);
        forget_task(id);
        for (auto& sent : w.sent) {
            if (sent.id == id) {
                sent.abandoned = true;
            }
        }
        ++counters_.cancelled;
        actions_.push_back(send_cancel_action{s, id});
        complete(
            id, boost::asio::error::operation_aborted,
            {.diagnostics = {.summary = "The caller cancelled " + what + " before it started."}});
        return;
    }
    if ((type & cancellation_type::terminal) == cancellation_type::none) {
        return;  // a running task can only be abandoned by killing its worker
    }
    auto d = worker_diagnostics(w, now);
    d.summary = "The caller cancelled " + describe_task(id) + " while worker " +
                std::to_string(w.pid) + " ran it; the worker was killed and replaced.";
    forget_task(id);
    ++counters_.cancelled;
    complete(id, boost::asio::error::operation_aborted,
             {.worker_pid = slots_[s].pid, .diagnostics = std::move(d)});
    stop_worker(s, stop_reason::cancelled, true, now);
    maybe_finish_drain(now);
    check_finished(now);
}

void pool_core::stop_worker(slot_id s, stop_reason reason, bool force, time_point now) {
    auto& w = slots_[s];
    if (awaiting_fork(s)) {
        // Asked of the fork server, no process yet: nothing to signal.
        set_timer(s, time_point::max());
        if (reason == stop_reason::spawn_timeout) {
            // The fork server has not answered in time, so it is stuck: replacing it asks
            // again for this worker (requeue_fork_requests).
            server_.kill_reason = "did not answer a request for a worker within " +
                                  format_duration(params_.spawn_timeout) +
                                  " (pool_params::spawn_timeout) and was killed";
            stop_server(true, now);
            return;
        }
        // A worker that the fork server still hands over is killed by the driver.
        w.state = worker_state::stopped;
        return;
    }
    release_sent(s);
    if (w.state == worker_state::idle) {
        idle_.erase(std::remove(idle_.begin(), idle_.end(), s), idle_.end());
    }
    if (w.state == worker_state::stopping) {
        // Already on its way out; escalate if asked to.
        if (force && !w.killed) {
            w.killed = true;
            set_timer(s, time_point::max());
            actions_.push_back(signal_action{s, SIGKILL});
        }
        return;
    }
    w.state = worker_state::stopping;
    w.reason = reason;
    if (reason != stop_reason::shutdown && reason != stop_reason::pool_stop) {
        ++counters_.killed_by_pool;
    }
    if (force) {
        w.killed = true;
        set_timer(s, time_point::max());
        actions_.push_back(signal_action{s, SIGKILL});
    } else {
        w.killed = false;
        set_timer(s, now + params_.stop_grace);
        if (reason == stop_reason::shutdown) {
            actions_.push_back(send_shutdown_action{s});
        } else {
            actions_.push_back(signal_action{s, SIGTERM});
        }
    }
}

void pool_core::shutdown(time_point now) {
    if (draining_ || stopping_) {
        return;
    }
    draining_ = true;
    if (!started_) {
        fail_queued(errc::shutting_down, "The pool was shut down before it started.");
        for (auto& w : slots_) {
            w.state = worker_state::stopped;
        }
    }
    maybe_finish_drain(now);
    check_finished(now);
}

void pool_core::stop(time_point now) {
    if (stopping_ || finished_) {
        return;
    }
    stopping_ = true;
    std::vector<task_id> ids;
    ids.reserve(tasks_.size());
    for (const auto& [id, t] : tasks_) {
        ids.push_back(id);
    }
    std::sort(ids.begin(), ids.end());
    for (task_id id : ids) {
        std::string what = describe_task(id);
        if (auto s = tasks_.at(id).slot) {
            slots_[*s].sent.clear();
        }
        forget_task(id);
        ++counters_.cancelled;
        complete(
            id, boost::asio::error::operation_aborted,
            {.diagnostics = {.summary = "The pool was cancelled before " + what + " finished."}});
    }
    for (slot_id s = 0; s < slots_.size(); ++s) {
        switch (slots_[s].state) {
            case worker_state::backoff:
                slots_[s].state = worker_state::stopped;
                slots_[s].waiting = false;
                set_timer(s, time_point::max());
                break;
            case worker_state::starting:
            case worker_state::idle:
            case worker_state::busy:
            case worker_state::stopping:
                stop_worker(s, stop_reason::pool_stop, true, now);
                break;
            case worker_state::stopped:
                break;
        }
    }
    check_finished(now);
}

void pool_core::maybe_finish_drain(time_point now) {
    if (!draining_ || stopping_ || queued_ > 0) {
        return;
    }
    for (slot_id s = 0; s < slots_.size(); ++s) {
        auto& w = slots_[s];
        switch (w.state) {
            case worker_state::backoff:
                w.state = worker_state::stopped;
                w.waiting = false;
                set_timer(s, time_point::max());
                break;
            case worker_state::idle:
                stop_worker(s, stop_reason::shutdown, false, now);
                break;
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
    if (finished_ || !(draining_ || stopping_) || !tasks_.empty()) {
        return;
    }
    for (const auto& w : slots_) {
        if (w.state != worker_state::stopped) {
            return;
        }
    }
    if (fork_server_mode() && server_.state != server_state::stopped) {
        // Every worker is gone; the fork server goes last (its exit comes back here). Even
        // on stop() it is asked first, not killed: it then answers the fork request it may
        // be working on before it exits, so the worker it made is handed over (and killed)
        // rather than left as a child nobody knows; SIGKILL follows after stop_grace.
        stop_server(false, now);
        return;
    }
    finished_ = true;
    actions_.push_back(run_finished_action{});
}

void pool_core::fail_queued(boost::system::error_code error, const std::string& summary) {
    std::vector<task_id> ids;
    for (const auto& [id, t] : tasks_) {
        if (!t.slot) {
            ids.push_back(id);
        }
    }
    std::sort(ids.begin(), ids.end());
    for (task_id id : ids) {
        forget_task(id);
        if (error == errc::spawn_failed) {
            ++counters_.spawn_failed;
        } else {
            ++counters_.rejected;
        }
        complete(id, error, {.diagnostics = {.summary = summary}});
    }
    queue_.clear();
}

void pool_core::on_spawned(slot_id s, int pid, time_point now) {
    auto& w = slots_[s];
    w.pid = pid;
    w.process_start = now;
    ++counters_.spawned;
    notify(worker_event::kind::started, s, "worker " + std::to_string(pid) + " started");
}

void pool_core::notify(worker_event::kind what, slot_id s, std::string description) {
    if (params_.on_worker_event) {
        actions_.push_back(notify_action{{what, s, slots_[s].pid, std::move(description)}});
    }
}

void pool_core::on_spawn_error(slot_id s, std::string why, time_point now) {
    ++counters_.failed_starts;
    after_failed_start(s, std::move(why));
    schedule_restart(s, now);
    check_finished(now);
    start_waiting(now);  // a start may have ended, making room for the next
}

bool pool_core::ready_workers_exist() const {
    return std::any_of(slots_.begin(), slots_.end(), [](const slot& w) {
        return w.state == worker_state::idle || w.state == worker_state::busy;
    });
}

void pool_core::after_failed_start(slot_id s, std::string why) {
    count_failed_start(slots_[s].failed_starts, std::move(why));
}

// A start that never became ready, of a worker or of the fork server: enough of them in a
// row, with no worker up, make the pool degraded.
void pool_core::count_failed_start(unsigned& failed_starts, std::string why) {
    ++failed_starts;
    last_spawn_error_ = std::move(why);
    if (!degraded_ && failed_starts >= params_.spawn_failures_until_degraded &&
        !ready_workers_exist()) {
        degraded_ = true;
        fail_queued(errc::spawn_failed,
                    "No worker can be started, so the task was not run. Last start failure: " +
                        last_spawn_error_);
    }
}

void pool_core::schedule_restart(slot_id s, time_point now) {
    auto& w = slots_[s];
    w.pid = 0;
    w.sent.clear();
    const bool no_more_work = draining_ && queued_ == 0;
    if (stopping_ || no_more_work) {
        w.state = worker_state::stopped;
        set_timer(s, time_point::max());
        return;
    }
    const auto delay =
        restart_delay(params_.restart_backoff, std::max(w.failures, w.failed_starts), random_);
    if (delay.count() == 0) {
        spawn(s, now);
        return;
    }
    w.state = worker_state::backoff;
    set_timer(s, now + delay);
}

void pool_core::on_message(slot_id s, wire::message&& msg, time_point now) {
    const auto state = slots_[s].state;
    if (state == worker_state::stopping || state == worker_state::stopped) {
        return;  // it is being stopped; what it still says no longer matters
    }
    if (auto* hello = std::get_if<wire::hello_msg>(&msg)) {
        on_hello(s, *hello, now);
    } else if (auto* reply = std::get_if<wire::reply_msg>(&msg)) {
        on_reply(s, std::move(*reply), now);
    } else if (std::holds_alternative<wire::heartbeat_msg>(msg)) {
        // Liveness only; nothing to decide yet.
    } else {
        on_protocol_error(s,
                          std::string("sent a ") + wire::message_name(msg) +
                              " message, which only the pool may send",
                          now);
    }
}

void pool_core::on_hello(slot_id s, const wire::hello_msg& hello, time_point now) {
    auto& w = slots_[s];
    if (w.state != worker_state::starting) {
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
    w.state = worker_state::idle;
    set_timer(s, time_point::max());
    w.failed_starts = 0;
    degraded_ = false;
    notify(worker_event::kind::ready, s,
           "worker " + std::to_string(w.pid) + " is ready, " +
               format_duration(duration_cast<milliseconds>(now - w.process_start)) +
               " after it started");
    idle_.push_back(s);
    dispatch(now);
    maybe_finish_drain(now);
    start_waiting(now);  // a start may have ended, making room for the next
}

void pool_core::on_reply(slot_id s, wire::reply_msg&& reply, time_point now) {
    auto& w = slots_[s];
    if (w.state != worker_state::busy || w.sent.empty() || w.sent.front().id != reply.id) {
        on_protocol_error(
            s,
            "sent a reply for task " + std::to_string(reply.id) +
                (w.sent.empty() ? std::string(" while it runs no task")
                                : " while it runs task " + std::to_string(w.sent.front().id)),
            now);
        return;
    }
    w.failures = 0;
    const sent_task done = w.sent.front();
    w.sent.pop_front();
    if (w.sent.empty()) {
        w.state = worker_state::idle;
        idle_.push_back(s);
    } else {
        w.task_start = now;  // the next prefetched task starts now
    }
    if (!done.abandoned) {
        complete_reply(s, done.id, std::move(reply), now);
    }
    dispatch(now);
    maybe_finish_drain(now);
    check_finished(now);
}

void pool_core::complete_reply(slot_id s, task_id id, wire::reply_msg&& reply, time_point now) {
    const auto& w = slots_[s];
    response result{.worker_pid = w.pid};
    boost::system::error_code error;
    if (reply.ok) {
        ++counters_.succeeded;
        result.payload = std::move(reply.payload);
        result.tensors = std::move(reply.tensors);
    } else {
        ++counters_.task_failed;
        error = errc::task_failed;
        auto& d = result.diagnostics;
        d = worker_diagnostics(w, now);
        d.summary = "Worker " + std::to_string(w.pid) + " reported an error in " +
                    describe_task(id) + ": " + reply.error_type + ": " + reply.error_message;
        d.error_type = std::move(reply.error_type);
        d.error_message = std::move(reply.error_message);
    }
    forget_task(id);
    complete(id, error, std::move(result));
}

void pool_core::on_protocol_error(slot_id s, std::string what, time_point now) {
    auto& w = slots_[s];
    if (w.state == worker_state::stopping || w.state == worker_state::stopped ||
        w.state == worker_state::backoff) {
        return;
    }
    ++w.failures;
    if (auto id = running_task(w)) {
        auto d = worker_diagnostics(w, now);
        d.summary = "Worker " + std::to_string(w.pid) + " " + what + " while running " +
                    describe_task(*id) + "; it was killed.";
        ++counters_.protocol_errors;
        forget_task(*id);
        complete(*id, errc::protocol_error, {.worker_pid = w.pid, .diagnostics = std::move(d)});
    }
    if (w.state == worker_state::starting) {
        ++counters_.failed_starts;
        after_failed_start(
            s, "worker " + std::to_string(w.pid) + " " + what + " before it was ready.");
    }
    stop_worker(s, stop_reason::protocol, true, now);
    maybe_finish_drain(now);
    check_finished(now);
    start_waiting(now);  // a start may have ended, making room for the next
}

void pool_core::on_channel_closed(slot_id s, std::string what, time_point now) {
    auto& w = slots_[s];
    if (w.state != worker_state::starting && w.state != worker_state::idle &&
        w.state != worker_state::busy) {
        return;
    }
    // Usually the worker is exiting and its exit status is about to be reaped; wait for it,
    // so the caller learns how it died rather than just that its channel closed.
    w.channel_closed = std::move(what);
    set_timer(s, std::min(w.timer, now + params_.stop_grace));
}

void pool_core::on_log(slot_id s, std::string_view bytes) {
    slots_[s].log.append(bytes);
}

void pool_core::on_exit(slot_id s, const exit_status& status, time_point now) {
    auto& w = slots_[s];
    const std::string how = describe_exit(status);
    const std::string uptime = format_duration(duration_cast<milliseconds>(now - w.process_start));
    const std::string log = w.log.text();
    const int pid = w.pid;
    const worker_state was = w.state;
    const std::string log_note = log.empty() ? std::string(" It wrote nothing to stdout or stderr.")
                                             : " Its last output line: \"" + last_line(log) + "\".";
    switch (w.state) {
        case worker_state::starting: {
            ++counters_.failed_starts;
            after_failed_start(s, "worker " + std::to_string(w.pid) + " " + how +
                                      " before it was ready, " + uptime + " after it started." +
                                      log_note);
            break;
        }
        case worker_state::idle:
            idle_.erase(std::remove(idle_.begin(), idle_.end(), s), idle_.end());
            ++w.failures;
            ++(status.signal ? counters_.deaths_by_signal : counters_.deaths_by_exit);
            break;
        case worker_state::busy: {
            ++w.failures;
            ++(status.signal ? counters_.deaths_by_signal : counters_.deaths_by_exit);
            const auto id = running_task(w);
            if (!id) {
                release_sent(s);  // it was running a task nobody waits for any more
                break;
            }
            auto d = worker_diagnostics(w, now);
            d.exit_code = status.exit_code;
            d.signal = status.signal;
            d.core_dumped = status.core_dumped;
            d.peak_rss_bytes = status.peak_rss_bytes;
            d.summary = "Worker " + std::to_string(w.pid) + " " + how + " while running " +
                        describe_task(*id) + ", " + format_duration(d.task_run_time) +
                        " into it; it had been up " + uptime +
                        describe_memory(status.peak_rss_bytes) + "." + log_note;
            ++counters_.worker_died;
            forget_task(*id);
            release_sent(s);
            complete(*id, errc::worker_died, {.worker_pid = w.pid, .diagnostics = std::move(d)});
            break;
        }
        case worker_state::stopping:
            if (w.reason == stop_reason::spawn_timeout) {
                ++counters_.failed_starts;
                after_failed_start(
                    s, "worker " + std::to_string(w.pid) + " did not become ready within " +
                           format_duration(params_.spawn_timeout) +
                           " (pool_params::spawn_timeout) and was killed." + log_note);
            }
            break;
        case worker_state::backoff:
        case worker_state::stopped:
            return;  // no process; cannot happen, but must not restart anything
    }
    schedule_restart(s, now);
    if (params_.on_worker_event) {
        std::string next;
        if (w.state == worker_state::backoff) {
            next = "; restarting in " + format_duration(duration_cast<milliseconds>(w.timer - now));
        } else if (w.state == worker_state::starting) {
            next = "; restarted at once";
        }
        actions_.push_back(notify_action{
            {worker_event::kind::exited, s, pid,
             "worker " + std::to_string(pid) + " " + how + " while " + to_string(was) + next}});
    }
    maybe_finish_drain(now);
    check_finished(now);
    start_waiting(now);  // a start may have ended, making room for the next
}

void pool_core::on_timer(time_point now) {
    // Tasks past their deadline.
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
        const task_id id = deadlines_.begin()->second;
        const auto& t = tasks_.at(id);
        const auto waited = duration_cast<milliseconds>(now - t.submitted);
        ++counters_.timed_out;
        if (!t.slot) {
            std::string summary = describe_task(id) + " waited " + format_duration(waited) +
                                  " in the queue and passed its deadline before a worker "
                                  "was free.";
            forget_task(id);
            complete(id, errc::timeout, {.diagnostics = {.summary = std::move(summary)}});
            continue;
        }
        const slot_id s = *t.slot;
        auto& w = slots_[s];
        if (running_task(w) != id) {
            // Prefetched and not started: drop it without disturbing the worker.
            std::string summary = describe_task(id) + " waited " + format_duration(waited) +
                                  " behind another task on worker " + std::to_string(w.pid) +
                                  " and passed its deadline before it started.";
            forget_task(id);
            for (auto& sent : w.sent) {
                if (sent.id == id) {
                    sent.abandoned = true;
                }
            }
            complete(id, errc::timeout,
                     {.worker_pid = w.pid, .diagnostics = {.summary = std::move(summary)}});
            continue;
        }
        auto d = worker_diagnostics(w, now);
        d.summary = describe_task(id) + " passed its deadline after " + format_duration(waited) +
                    " (" + format_duration(d.task_run_time) + " of it running on worker " +
                    std::to_string(w.pid) + "); the worker was stopped and will be replaced.";
        forget_task(id);
        complete(id, errc::timeout, {.worker_pid = w.pid, .diagnostics = std::move(d)});
        stop_worker(s, stop_reason::deadline, false, now);
    }
    if (server_.timer <= now) {
        switch (server_.state) {
            case server_state::starting:
                server_.kill_reason = "did not become ready within " +
                                      format_duration(params_.spawn_timeout) +
                                      " (pool_params::spawn_timeout) and was killed";
                stop_server(true, now);
                break;
            case server_state::backoff:
                server_.timer = time_point::max();
                start_server(now);
                break;
            case server_state::stopping:
                stop_server(true, now);
                break;
            default:
                server_.timer = time_point::max();
                break;
        }
    }
    // Worker timers that are due; handling one may set others, so take the due ones first.
    std::vector<slot_id> due;
    for (auto it = slot_timers_.begin(); it != slot_timers_.end() && it->first <= now; ++it) {
        due.push_back(it->second);
    }
    for (const slot_id s : due) {
        auto& w = slots_[s];
        if (w.timer > now) {
            continue;
        }
        if (w.channel_closed && (w.state == worker_state::starting ||
                                 w.state == worker_state::idle || w.state == worker_state::busy)) {
            on_protocol_error(s, *w.channel_closed + " but did not exit", now);
            continue;
        }
        switch (w.state) {
            case worker_state::starting:
                stop_worker(s, stop_reason::spawn_timeout, true, now);
                break;
            case worker_state::backoff:
                spawn(s, now);
                break;
            case worker_state::stopping:
                stop_worker(s, w.reason, true, now);
                break;
            default:
                set_timer(s, time_point::max());
                break;
        }
    }
    maybe_finish_drain(now);
    check_finished(now);
    start_waiting(now);  // a start may have ended, making room for the next
}

std::optional<time_point> pool_core::next_deadline() const {
    time_point next = time_point::max();
    if (!deadlines_.empty()) {
        next = deadlines_.begin()->first;
    }
    if (!slot_timers_.empty()) {
        next = std::min(next, slot_timers_.begin()->first);
    }
    next = std::min(next, server_.timer);
    if (next == time_point::max()) {
        return std::nullopt;
    }
    return next;
}

void pool_core::set_timer(slot_id s, time_point at) {
    auto& w = slots_[s];
    if (w.timer != time_point::max()) {
        slot_timers_.erase({w.timer, s});
    }
    w.timer = at;
    if (at != time_point::max()) {
        slot_timers_.emplace(at, s);
    }
}

pool_stats pool_core::stats() const {
    pool_stats s = counters_;
    for (const auto& w : slots_) {
        switch (w.state) {
            case worker_state::backoff:
                ++(w.waiting ? s.workers_waiting : s.workers_backoff);
                break;
            case worker_state::starting:
                ++s.workers_starting;
                break;
            case worker_state::idle:
                ++s.workers_idle;
                break;
            case worker_state::busy:
                ++s.workers_busy;
                break;
            case worker_state::stopping:
                ++s.workers_stopping;
                break;
            case worker_state::stopped:
                ++s.workers_stopped;
                break;
        }
    }
    s.queue_depth = queued_;
    s.degraded = degraded_;
    s.intra_op_threads = params_.intra_op_threads;
    s.inter_op_threads = params_.inter_op_threads;
    s.fork_server_pid = server_.pid;
    s.fork_server_ready = server_.state == server_state::ready;
    return s;
}

}  // namespace torchpool::core
