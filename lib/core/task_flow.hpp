// A task's way through the pool, from its admission to its one completion: admitted, refused
// or quarantined; waiting for room, queued, sent to a worker (or sent ahead), answered;
// cancelled by its caller, past its deadline, or under a worker that failed (run again,
// failed as a poison task, or failed with the cause). Its status is the task table's; this
// unit decides each step and completes the task in one place (`complete`). What it asks of a
// task's worker (stop it, give it a grace to answer a cancellation) goes through the worker
// lifecycle.
#pragma once

#include "../wire/messages.hpp"
#include "actions.hpp"
#include "dispatch.hpp"
#include "inspector.hpp"
#include "pool_phase.hpp"
#include "quarantine.hpp"
#include "report.hpp"
#include "restart_policy.hpp"
#include "retry_policy.hpp"
#include "task_table.hpp"
#include "types.hpp"
#include "worker_lifecycle.hpp"
#include "worker_set.hpp"
#include <torchpool/pool_params.hpp>
#include <torchpool/task.hpp>

#include <boost/asio/cancellation_type.hpp>
#include <boost/system/error_code.hpp>

#include <memory>
#include <string>

namespace torchpool::core {

class task_flow {
public:
    task_flow(const pool_params& params, task_table& tasks, worker_set& workers,
              quarantine& quarantined, const restart_policy& restart, const pool_phase& phase,
              const inspector& inspect, worker_lifecycle& lifecycle, report& out,
              action_queue& actions)
        : params_(params),
          tasks_(tasks),
          workers_(workers),
          quarantine_(quarantined),
          restart_(restart),
          phase_(phase),
          inspect_(inspect),
          lifecycle_(lifecycle),
          report_(out),
          actions_(actions) {}

    /// A new task: queued (true: dispatch next), waiting for room, or completed at once.
    bool submit(task_id id, std::string&& method, const task_options& options, time_point now);
    /// Completes a task that was never admitted (invalid request), and counts it.
    void reject(task_id id, boost::system::error_code error, std::string summary);
    /// Sends queued tasks to the workers that can take them.
    void dispatch(time_point now);
    /// Moves tasks that wait for room into the queue while it has room; true if any moved.
    bool admit_waiting();
    /// A task went back to the queue since the last dispatch (taken: cleared).
    bool take_requeued() noexcept { return std::exchange(requeued_, false); }

    /// The worker of `s` answered the task it ran (`reply`, already checked to be for it):
    /// the task completes (unless its caller abandoned it), and the next task it holds starts.
    struct answer {
        bool abandoned;  ///< its caller had gone: the reply was dropped
        bool idle;       ///< it holds no other task
    };
    answer answered(slot_id s, wire::reply_msg&& reply, time_point now);
    /// Its caller asked to cancel it; true if it ended in the queue.
    bool cancel(task_id id, boost::asio::cancellation_type type, time_point now);
    /// The tasks whose deadline passed at `now` end.
    void deadlines_due(time_point now);
    /// The worker of `s` failed under its running task: it runs again on another worker if it
    /// may, fails as a poison task, or completes with the failure. Releases what else `s`
    /// was sent.
    void failed_under(slot_id s, worker_end::task_failure&& failure, time_point now);
    /// Every queued task completes with `error`.
    void fail_queued(boost::system::error_code error, const std::string& summary);
    /// The pool stops: every task completes, aborted.
    void abort_all();

    /// Ends task `id`: it leaves the task table (if it was in it) and its caller is answered.
    /// The one place a task ends.
    void complete(task_id id, boost::system::error_code error, response result) {
        complete(id, error, std::make_shared<response>(std::move(result)));
    }
    void complete(task_id id, boost::system::error_code error, std::shared_ptr<response> result);

private:
    void complete_answered(slot_id s, task_id id, wire::reply_msg&& reply, time_point now);
    void deadline(task_id id, time_point now);

    const pool_params& params_;
    task_table& tasks_;
    worker_set& workers_;
    quarantine& quarantine_;
    const restart_policy& restart_;
    const pool_phase& phase_;
    const inspector& inspect_;
    worker_lifecycle& lifecycle_;
    report& report_;
    action_queue& actions_;
    bool requeued_ = false;  // a task went back to the queue: dispatch once settled
};

}  // namespace torchpool::core
