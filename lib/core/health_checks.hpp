// The pool's checks of its ready workers, carried out: heartbeats to idle workers (one that
// does not answer is stopped and replaced), and memory limits (a worker over the soft limit
// is recycled once idle; one over the hard limit is killed, and its task fails with the
// figures). The units that decide are heartbeat_monitor and memory_watch; this one reads what
// they need (the workers' statuses, their memory through the inspector) and acts through the
// worker lifecycle, the slot policy and the task flow.
#pragma once

#include "../wire/messages.hpp"
#include "actions.hpp"
#include "heartbeat.hpp"
#include "inspector.hpp"
#include "memory_watch.hpp"
#include "report.hpp"
#include "slot_policy.hpp"
#include "task_flow.hpp"
#include "task_table.hpp"
#include "types.hpp"
#include "worker_lifecycle.hpp"
#include "worker_set.hpp"

namespace torchpool::core {

class health_checks {
public:
    health_checks(heartbeat_monitor& heartbeat, memory_watch& memory, worker_set& workers,
                  const task_table& tasks, const inspector& inspect, slot_policy& slots,
                  worker_lifecycle& lifecycle, task_flow& flow, report& out, action_queue& actions)
        : heartbeat_(heartbeat),
          memory_(memory),
          workers_(workers),
          tasks_(tasks),
          inspect_(inspect),
          slots_(slots),
          lifecycle_(lifecycle),
          flow_(flow),
          report_(out),
          actions_(actions) {}

    /// The worker of `s` answered a heartbeat; true if it may take tasks again.
    bool heartbeat_answered(slot_id s, const wire::heartbeat_msg& beat, time_point now);
    /// The worker of `s` answered its last task: its memory is read now if it is due.
    void task_ended(slot_id s, time_point now) {
        if (memory_.enabled() && memory_.task_ended(s, now)) {
            check_memory(s, now);
        }
    }
    /// Heartbeats and memory readings that are due at `now`.
    void due(time_point now);

private:
    void sweep_heartbeats(time_point now);
    /// An idle worker did not answer its heartbeat: it is stopped and replaced.
    void unresponsive(slot_id s, time_point now);
    /// Reads the memory of the worker of `s` and acts on its limits.
    void check_memory(slot_id s, time_point now);
    /// Over the hard limit: its task fails, it is killed.
    void memory_kill(slot_id s, const worker_memory& m, time_point now);

    heartbeat_monitor& heartbeat_;
    memory_watch& memory_;
    worker_set& workers_;
    const task_table& tasks_;
    const inspector& inspect_;
    slot_policy& slots_;
    worker_lifecycle& lifecycle_;
    task_flow& flow_;
    report& report_;
    action_queue& actions_;
};

}  // namespace torchpool::core
