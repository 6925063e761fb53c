#include "task_flow.hpp"

#include <torchpool/error.hpp>

#include <boost/asio/error.hpp>

namespace torchpool::core {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

// --- admission and dispatch --------------------------------------------------------------

bool task_flow::submit(task_id id, std::string&& method, const task_options& options,
                       time_point now) {
    report_.apply(facts::task_submitted{});
    if (quarantine_.holds(options.fingerprint)) {
        report_.apply(facts::task_quarantined{});
        complete(id, errc::poison_task,
                 {.diagnostics = {.summary = quarantined_task(describe_task(id, &method),
                                                              options.fingerprint)}});
        return false;
    }
    switch (admit(phase_.admitting(), restart_.degraded(), tasks_.queued(), params_.queue_limit)) {
        case admission::shutting_down:
            complete(id, errc::shutting_down,
                     {.diagnostics = {.summary = refused_shutting_down(method)}});
            return false;
        case admission::degraded:
            complete(
                id, errc::spawn_failed,
                {.diagnostics = {.summary = refused_degraded(&method, restart_.last_error())}});
            return false;
        case admission::queue_full:
            if (options.wait_for_room) {
                report_.apply(facts::task_waits_for_room{});
                tasks_.add(id, std::move(method), options, now, false);
                return false;
            }
            complete(id, errc::overloaded,
                     {.diagnostics = {.summary = refused_queue_full(method, tasks_.queued())}});
            return false;
        case admission::admitted:
            break;
    }
    tasks_.add(id, std::move(method), options, now);
    return true;
}

void task_flow::reject(task_id id, boost::system::error_code error, std::string summary) {
    report_.apply(facts::task_submitted{});
    complete(id, error, {.diagnostics = {.summary = std::move(summary)}});
}

void task_flow::dispatch(time_point now) {
    requeued_ = false;
    while (tasks_.queued() > 0) {
        const auto target = workers_.pick([this](slot_id s) { return tasks_.sent(s).size(); });
        if (!target) {
            break;
        }
        if (workers_.status(*target) == worker_status::idle) {
            workers_[*target].task_start = now;  // it starts now, rather than after others
        }
        workers_.task_sent(*target);
        time_point submitted;
        unsigned attempt = 1;
        const task_id id = tasks_.send_next(*target, &submitted, &attempt);
        actions_.push_back(send_request_action{*target, id, attempt});
        report_.apply(facts::task_sent{.queue_wait = now - submitted});
        if (tasks_.waiting() > 0) {
            admit_waiting();  // there is room now
        }
    }
}

bool task_flow::admit_waiting() {
    bool admitted = false;
    while (tasks_.waiting() > 0 && tasks_.queued() < params_.queue_limit &&
           tasks_.admit_waiting()) {
        admitted = true;
    }
    return admitted;
}

// --- ends --------------------------------------------------------------------------------

void task_flow::complete(task_id id, boost::system::error_code error,
                         std::shared_ptr<response> result) {
    // The one place a task leaves the table (if it was ever in it), and is counted.
    auto failures = tasks_.end(id);
    report_.task_ended(error);
    if (!failures.empty()) {  // it ran more than once: its runs are listed, this one last
        if (result->worker_pid != 0 && error != errc::poison_task) {
            failures.push_back(
                {result->worker_pid, error, error ? result->diagnostics.summary : ""});
        }
        result->attempts = std::move(failures);
    }
    actions_.push_back(complete_action{id, error, std::move(result)});
}

task_flow::answer task_flow::answered(slot_id s, wire::reply_msg&& reply, time_point now) {
    auto& w = workers_[s];
    report_.apply(facts::task_answered{.run_time = now - w.task_start});
    const auto done = tasks_.answered(s);
    const bool idle = tasks_.sent(s).empty();
    if (idle) {
        workers_.all_answered(s);
    } else {
        w.task_start = now;  // the next task sent ahead starts now
    }
    if (!done.abandoned) {
        complete_answered(s, done.id, std::move(reply), now);
    }
    return {.abandoned = done.abandoned, .idle = idle};
}

void task_flow::complete_answered(slot_id s, task_id id, wire::reply_msg&& reply, time_point now) {
    const int pid = workers_[s].child.pid();
    // Made where it ends up (shared with the caller's handler): a response is large to move.
    auto result = std::make_shared<response>();
    result->worker_pid = pid;
    boost::system::error_code error;
    if (!reply.ok && reply.error_type == wire::cancelled_error &&
        tasks_.find(id)->cancel_requested) {
        result->diagnostics.worker_pid = pid;
        result->diagnostics.summary = stopped_on_cancel(tasks_.describe(id), pid);
        complete(id, boost::asio::error::operation_aborted, std::move(result));
        return;
    }
    if (reply.ok) {
        result->payload = std::move(reply.payload);
        result->tensors = std::move(reply.tensors);
    } else {
        error = errc::task_failed;
        auto& d = result->diagnostics;
        d = inspect_.diagnostics(s, now, false);  // it stays up; its memory is not the point
        d.summary = reported_error(pid, tasks_.describe(id), reply.error_type, reply.error_message);
        d.error_type = std::move(reply.error_type);
        d.error_message = std::move(reply.error_message);
    }
    complete(id, error, std::move(result));
}

bool task_flow::cancel(task_id id, boost::asio::cancellation_type type, time_point now) {
    using boost::asio::cancellation_type;
    const auto* t = tasks_.find(id);
    if (!t) {
        return false;  // already completed; the cancellation raced with the completion
    }
    const auto wanted =
        cancellation_type::terminal | cancellation_type::partial | cancellation_type::total;
    if (!t->slot) {
        if ((type & wanted) == cancellation_type::none) {
            return false;
        }
        std::string summary = cancelled_in_queue(tasks_.describe(id));
        complete(id, boost::asio::error::operation_aborted,
                 {.diagnostics = {.summary = std::move(summary)}});
        return true;
    }
    const slot_id s = *t->slot;
    if (tasks_.running(s) != id) {
        // Sent ahead, not started: the worker is told, and its reply will be dropped.
        if ((type & wanted) == cancellation_type::none) {
            return false;
        }
        std::string summary = cancelled_before_start(tasks_.describe(id));
        tasks_.abandon(s, id);
        actions_.push_back(send_cancel_action{s, id});
        complete(id, boost::asio::error::operation_aborted,
                 {.diagnostics = {.summary = std::move(summary)}});
        return false;
    }
    // Running. Its worker is told either way; the handler may stop early.
    if ((type & cancellation_type::terminal) == cancellation_type::none) {
        if ((type & wanted) == cancellation_type::none || t->cancel_requested) {
            return false;
        }
        // Partial or total: the caller is completed by the worker's answer, operation_aborted
        // if the handler stopped on it, else its result (the cancellation came too late).
        tasks_.request_cancel(id);
        actions_.push_back(send_cancel_action{s, id});
        return false;
    }
    // Terminal: the caller is completed now; the worker has cancel_grace to answer, or it is
    // killed and replaced (worker_lifecycle::timer_due).
    const int pid = workers_[s].child.pid();
    std::string summary = cancelled_while_running(tasks_.describe(id), pid, params_.cancel_grace);
    if (!t->cancel_requested) {
        actions_.push_back(send_cancel_action{s, id});
    }
    tasks_.abandon(s, id);
    complete(
        id, boost::asio::error::operation_aborted,
        {.worker_pid = pid, .diagnostics = {.summary = std::move(summary), .worker_pid = pid}});
    lifecycle_.give_cancel_grace(s, now);
    return false;
}

void task_flow::deadlines_due(time_point now) {
    while (const auto id = tasks_.due(now)) {
        deadline(*id, now);
    }
}

void task_flow::deadline(task_id id, time_point now) {
    const auto* t = tasks_.find(id);
    const auto waited = duration_cast<milliseconds>(now - t->submitted);
    const std::optional<slot_id> slot = t->slot;
    if (!slot) {
        std::string summary = deadline_in_queue(tasks_.describe(id), waited);
        complete(id, errc::timeout, {.diagnostics = {.summary = std::move(summary)}});
        return;
    }
    const int pid = workers_[*slot].child.pid();
    if (tasks_.running(*slot) != id) {
        // Sent ahead and not started: dropped without disturbing the worker.
        std::string summary = deadline_before_start(tasks_.describe(id), waited, pid);
        tasks_.abandon(*slot, id);
        complete(id, errc::timeout,
                 {.worker_pid = pid, .diagnostics = {.summary = std::move(summary)}});
        return;
    }
    auto d = inspect_.diagnostics(*slot, now, true, true);
    d.summary = deadline_while_running(tasks_.describe(id), waited, d);
    complete(id, errc::timeout, {.worker_pid = pid, .diagnostics = std::move(d)});
    lifecycle_.stop(*slot, stop_reason::deadline, false, now);
}

void task_flow::failed_under(slot_id s, worker_end::task_failure&& failure, time_point now) {
    const task_id id = failure.id;
    auto& result = failure.result;
    tasks_.release(s);  // what it was sent ahead goes back first, so that this task leads
    const auto* t = tasks_.find(id);
    std::vector<task_attempt>* failures = nullptr;
    if (!t->cancel_requested) {
        // Worker failures are rare: every one under a task is kept until it ends.
        failures = &tasks_.failed_under(
            id, {result.worker_pid, failure.error, result.diagnostics.summary});
    }
    auto& summary = result.diagnostics.summary;
    switch (decide({.cancel_requested = t->cancel_requested,
                    .failures = failures ? failures->size() : 0,
                    .poison_deaths = params_.poison.deaths,
                    .retries_left = t->retries_left,
                    .before_deadline = t->deadline > now,
                    .pool_stopping = phase_.stopping()})) {
        case after_failure::cancelled:
            summary = cancelled_then_died(tasks_.describe(id), summary);
            complete(id, boost::asio::error::operation_aborted, std::move(result));
            return;
        case after_failure::poison:
            quarantine_.add(t->fingerprint);
            summary =
                poison_task(tasks_.describe(id), *failures, t->fingerprint, quarantine_.enabled());
            report_.apply(
                facts::poison_task{.slot = s, .pid = result.worker_pid, .summary = summary});
            complete(id, errc::poison_task, std::move(result));
            return;
        case after_failure::retry:
            report_.apply(facts::task_retried{});
            tasks_.retry(id);
            requeued_ = true;
            return;
        case after_failure::fail:
            if (const std::size_t runs = failures->size(); runs == 1) {
                failures->clear();  // it ran once: nothing to list
            } else {
                failures->pop_back();  // complete() adds the last run
                summary += no_retries_left(runs);
            }
            complete(id, failure.error, std::move(result));
            return;
    }
}

void task_flow::fail_queued(boost::system::error_code error, const std::string& summary) {
    for (const task_id id : tasks_.queued_ids()) {
        complete(id, error, {.diagnostics = {.summary = summary}});
    }
    tasks_.clear_queue();
}

void task_flow::abort_all() {
    for (const task_id id : tasks_.ids()) {
        const std::string what = tasks_.describe(id);
        if (const auto slot = tasks_.find(id)->slot) {
            tasks_.drop_sent(*slot);
        }
        complete(id, boost::asio::error::operation_aborted,
                 {.diagnostics = {.summary = cancelled_with_pool(what)}});
    }
}

}  // namespace torchpool::core
