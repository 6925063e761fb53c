// The worker slots' processes, from a slot's turn to start to its restart or retirement: it
// waits for the start gate (and the fork server), starts, loads (with more time while it
// computes), says hello, is asked to stop or killed, exits, and starts again after its
// backoff, leaves the pool (slot_policy), or is retired. Each worker's process transitions
// happen here and nowhere else; what the pool does about the task a worker leaves behind, and
// about a start that failed, is the coordinator's (pool_core): these return it as a
// `worker_end`.
#pragma once

#include "../wire/messages.hpp"
#include "actions.hpp"
#include "facts.hpp"
#include "fork_server.hpp"
#include "heartbeat.hpp"
#include "inspector.hpp"
#include "memory_watch.hpp"
#include "pool_phase.hpp"
#include "report.hpp"
#include "restart_policy.hpp"
#include "slot_policy.hpp"
#include "task_table.hpp"
#include "types.hpp"
#include "worker_set.hpp"
#include <torchpool/error.hpp>
#include <torchpool/pool_params.hpp>
#include <torchpool/task.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace torchpool::core {

/// What a worker's end (its exit, or a protocol error) leaves for the coordinator.
struct worker_end {
    /// The task it was running fails with `error` and `result`, or runs again (retry_policy).
    struct task_failure {
        task_id id;
        errc error;
        response result;
    };
    std::optional<task_failure> task;
    /// It never became ready: why, in words (restart_policy counts it toward degraded).
    std::optional<std::string> failed_start;
    /// Exits only, for the worker_exited fact: its pid, how it ended (describe_exit's
    /// words) and its state then.
    int pid = 0;
    std::string how;
    const char* was = "";
};

class worker_lifecycle {
public:
    worker_lifecycle(const pool_params& params, worker_set& workers, task_table& tasks,
                     slot_policy& slots, restart_policy& restart, fork_server_supervisor& server,
                     heartbeat_monitor& heartbeat, memory_watch& memory, const inspector& inspect,
                     const pool_phase& phase, report& out, action_queue& actions)
        : params_(params),
          workers_(workers),
          tasks_(tasks),
          slots_(slots),
          restart_(restart),
          server_(server),
          heartbeat_(heartbeat),
          memory_(memory),
          inspect_(inspect),
          phase_(phase),
          report_(out),
          actions_(actions) {}

    // Starts.

    /// Every slot is parked until the pool uses it.
    void park_all();
    /// No process, and none will be started (it waited to restart while the pool drains).
    void retire(slot_id s) { workers_[s].child.retire(); }
    /// A slot needs a process: it waits for its turn (start gate) and the fork server.
    void wait_for_start(slot_id s, time_point now);
    /// Starts waiting slots while the gate allows (nothing while the pool stops, or while the
    /// fork server is not ready).
    void start_waiting(time_point now);
    /// True while `s` waits for the worker it asked the fork server for.
    bool awaiting_fork(slot_id s) const {
        return server_.enabled() && workers_.at(s).child.awaiting_process();
    }
    /// The fork server is gone: the workers asked of it are asked again, of the next one.
    void requeue_fork_requests(time_point now);
    void spawned(slot_id s, int pid, time_point now);
    /// Its process could not be made (the coordinator then calls after_exit).
    void spawn_failed(slot_id s) { workers_[s].child.count_failed_start(); }
    /// It said hello: ready, or the protocol problem (the coordinator calls protocol_error).
    std::optional<std::string> hello(slot_id s, const wire::hello_msg& hello, time_point now);
    /// It answered the task it ran: healthy and active; an answer within its cancel grace
    /// (its caller had abandoned the task) ends the grace.
    void answered(slot_id s, bool abandoned, time_point now) {
        auto& w = workers_[s];
        w.child.healthy();
        heartbeat_.active(s, now);
        if (abandoned && w.child.due() == timer_purpose::cancel_grace) {
            w.child.clear_timer();
        }
    }
    /// Carries out what the slot policy asks: starts, and workers that leave.
    void carry_out(const slot_commands& commands, time_point now) {
        if (!commands.empty()) {  // the common case: nothing
            carry_out_each(commands, now);
        }
    }

    // Ends.

    /// Asks (or with `force`, kills) the worker of `s` to stop; what it was sent goes back
    /// to the queue.
    void stop(slot_id s, stop_reason reason, bool force, time_point now);
    /// Its running task was cancelled for good: it has cancel_grace to answer, or is killed.
    void give_cancel_grace(slot_id s, time_point now) {
        workers_[s].child.set_timer_if_sooner(timer_purpose::cancel_grace,
                                              now + params_.cancel_grace);
    }
    /// Its channel reached end of stream: its exit is awaited for stop_grace.
    void channel_closed(slot_id s, std::string what, time_point now);
    /// It broke the protocol (`what`, a verb phrase); nullopt if it was on its way out
    /// already. The coordinator carries out the end, then calls stop(protocol, force).
    std::optional<worker_end> protocol_error(slot_id s, const std::string& what, time_point now);
    /// Its process was reaped; nullopt if it had none. The coordinator carries out the end,
    /// then calls after_exit.
    std::optional<worker_end> exited(slot_id s, const exit_status& status, time_point now);
    /// Its process is gone: it restarts after its backoff, leaves the pool, or is retired.
    void after_exit(slot_id s, time_point now);
    /// What comes next for `s` after its process ended or could not be made.
    facts::next_start next_start(slot_id s, time_point now) const {
        const auto& child = workers_[s].child;
        return {.state = child.state(), .at = child.timer(), .now = now};
    }
    /// When a child that ended with `failures` since it was healthy starts again, by the
    /// restart policy; reports pacing. `counts`: not a planned replacement.
    time_point restart_time(unsigned failures, bool counts, time_point now);

    /// Its timer is due: handled here, except a channel closed without an exit, which is a
    /// protocol error (returned, in words, for the coordinator).
    std::optional<std::string> timer_due(slot_id s, time_point now);

private:
    void begin_start(slot_id s, time_point now);
    void carry_out_each(const slot_commands& commands, time_point now);
    /// A loading worker past its load_timeout used CPU time since the last look (and has
    /// extensions left): it gets more time, which this counts.
    bool loading_with_progress(slot_id s);
    /// Its running task was cancelled (terminal) and it did not answer in its grace: killed.
    void cancel_grace_over(slot_id s, time_point now);
    /// A start that never became ready is counted; `why` is for the coordinator.
    std::string failed_start(slot_id s, std::string why);
    /// The task `id` running on `s` fails, with diagnostics of the dead or stuck worker.
    worker_end::task_failure died_under(slot_id s, task_id id, const exit_status& status,
                                        const std::string& how, time_point now) const;

    const pool_params& params_;
    worker_set& workers_;
    task_table& tasks_;
    slot_policy& slots_;
    restart_policy& restart_;
    fork_server_supervisor& server_;
    heartbeat_monitor& heartbeat_;
    memory_watch& memory_;
    const inspector& inspect_;
    const pool_phase& phase_;
    report& report_;
    action_queue& actions_;
};

}  // namespace torchpool::core
