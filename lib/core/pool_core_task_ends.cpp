// The pool core's tasks that end other than by their worker's answer, or not yet: waiting for
// room in the queue, cancelled by their caller (queued, sent ahead or running, and the grace
// a running one's worker has to stop), past their deadline, and under a worker that failed:
// run again (retries), failed as a poison task, or failed with the cause (see pool_core.hpp).
#include "pool_core.hpp"
#include <torchpool/error.hpp>

#include <boost/asio/error.hpp>

#include <algorithm>

namespace torchpool::core {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

bool pool_core::admit_waiting() {
    bool admitted = false;
    while (tasks_.waiting() > 0 && tasks_.queued() < params_.queue_limit &&
           tasks_.admit_waiting()) {
        admitted = true;
    }
    return admitted;
}

void pool_core::cancel_task(task_id id, boost::asio::cancellation_type type, time_point now) {
    using boost::asio::cancellation_type;
    const auto* t = tasks_.find(id);
    if (!t) {
        return;  // already completed; the cancellation raced with the completion
    }
    const auto wanted =
        cancellation_type::terminal | cancellation_type::partial | cancellation_type::total;
    if (!t->slot) {
        if ((type & wanted) == cancellation_type::none) {
            return;
        }
        std::string summary = cancelled_in_queue(tasks_.describe(id));
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
        tasks_.abandon(s, id);
        actions_.push_back(send_cancel_action{s, id});
        complete(id, boost::asio::error::operation_aborted,
                 {.diagnostics = {.summary = std::move(summary)}});
        return;
    }
    // Running. Its worker is told either way; the handler may stop early.
    if ((type & cancellation_type::terminal) == cancellation_type::none) {
        if ((type & wanted) == cancellation_type::none || t->cancel_requested) {
            return;
        }
        // Partial or total: the caller is completed by the worker's answer, operation_aborted
        // if the handler stopped on it, else its result (the cancellation came too late).
        tasks_.request_cancel(id);
        actions_.push_back(send_cancel_action{s, id});
        return;
    }
    // Terminal: the caller is completed now; the worker has cancel_grace to answer, or it is
    // killed and replaced (on_worker_timer).
    auto& w = workers_[s];
    const int pid = w.child.pid();
    std::string summary = cancelled_while_running(tasks_.describe(id), pid, params_.cancel_grace);
    if (!t->cancel_requested) {
        actions_.push_back(send_cancel_action{s, id});
    }
    tasks_.abandon(s, id);
    complete(
        id, boost::asio::error::operation_aborted,
        {.worker_pid = pid, .diagnostics = {.summary = std::move(summary), .worker_pid = pid}});
    w.child.set_timer_if_sooner(timer_purpose::cancel_grace, now + params_.cancel_grace);
}

void pool_core::on_deadline(task_id id, time_point now) {
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

void pool_core::worker_failed_under(slot_id s, task_id id, errc error, response&& result,
                                    time_point now) {
    tasks_.release(s);  // what it was sent ahead goes back first, so that this task leads
    const auto* t = tasks_.find(id);
    std::vector<task_attempt>* failures = nullptr;
    if (!t->cancel_requested) {
        // Worker failures are rare: every one under a task is kept until it ends.
        failures = &tasks_.failed_under(id, {result.worker_pid, error, result.diagnostics.summary});
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
            complete(id, error, std::move(result));
            return;
    }
}

}  // namespace torchpool::core
