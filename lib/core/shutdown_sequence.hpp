// How a run ends. Gracefully (shutdown): no new task is admitted, the admitted ones finish,
// idle workers are asked to exit as the queue empties, and a worker starts again if a task
// came back to the queue after the last one stopped. At once (stop): every task is aborted
// and every worker killed. Either way the run finishes once every task and every worker is
// gone, the fork server last; heartbeats and memory limits run until then. The phase itself
// (pool_phase) moves only here, after start.
#pragma once

#include "actions.hpp"
#include "fork_server.hpp"
#include "heartbeat.hpp"
#include "memory_watch.hpp"
#include "pool_phase.hpp"
#include "slot_policy.hpp"
#include "task_flow.hpp"
#include "task_table.hpp"
#include "types.hpp"
#include "worker_lifecycle.hpp"
#include "worker_set.hpp"

namespace torchpool::core {

class shutdown_sequence {
public:
    shutdown_sequence(pool_phase& phase, worker_set& workers, const task_table& tasks,
                      slot_policy& slots, fork_server_supervisor& server,
                      heartbeat_monitor& heartbeat, memory_watch& memory,
                      worker_lifecycle& lifecycle, task_flow& flow, action_queue& actions)
        : phase_(phase),
          workers_(workers),
          tasks_(tasks),
          slots_(slots),
          server_(server),
          heartbeat_(heartbeat),
          memory_(memory),
          lifecycle_(lifecycle),
          flow_(flow),
          actions_(actions) {}

    /// Graceful: true if it began now (the coordinator then settles).
    bool shutdown();
    /// At once: every task aborted, every worker killed.
    void stop(time_point now);
    /// After every event while the run ends: workers leave as the queue empties, and the run
    /// finishes once everything is gone.
    void step(time_point now) {
        if (phase_.draining()) {
            drain(now);
        }
        if (phase_.ending()) {
            finish_if_done(now);
        }
    }
    /// The run finishes if every task and every worker is gone.
    void finish_if_done(time_point now);

private:
    void drain(time_point now);
    /// Draining, with admitted tasks left and every worker stopped: one starts again.
    void serve_what_is_left(time_point now);

    pool_phase& phase_;
    worker_set& workers_;
    const task_table& tasks_;
    slot_policy& slots_;
    fork_server_supervisor& server_;
    heartbeat_monitor& heartbeat_;
    memory_watch& memory_;
    worker_lifecycle& lifecycle_;
    task_flow& flow_;
    action_queue& actions_;
};

}  // namespace torchpool::core
