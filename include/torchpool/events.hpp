// Notifications about worker processes, for logging and monitoring.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace torchpool {

struct worker_event {
    enum class kind {
        started,  ///< a worker process was created
        ready,    ///< it said hello and can take tasks
        exited,   ///< it was reaped (expectedly or not)
        /// no process could be made for the slot (e.g. no descriptor left); the
        /// description says why and when it is tried again; `pid` is 0
        start_failed,
        // The same three for the fork server (start_mode::fork_server); `slot` is 0.
        fork_server_started,
        fork_server_ready,  ///< it has loaded what it shares and can make workers
        fork_server_exited,
        /// about the pool as a whole, e.g. that it raised the open-file limit; `slot` and
        /// `pid` are 0
        notice,
        /// the pool cannot start workers (pool_params::spawn_failures_until_degraded):
        /// tasks fail at once with the last start error; `slot` and `pid` are 0
        degraded,
        /// a worker became ready after the pool was degraded; tasks are accepted again
        recovered,
        /// an idle worker did not answer a heartbeat in time (pool_params::heartbeat_timeout)
        /// and is being replaced; the description says what the kernel showed it doing
        unresponsive,
        /// a worker went over its hard memory limit and was killed (by the pool, or by the
        /// kernel in its memory cgroup); the description gives the figures
        memory_limit,
        /// a worker is replaced on purpose; the description says why (over its soft memory
        /// limit, ...)
        recycled,
        /// a task was failed as a poison task (pool_params::poison); the description lists
        /// the workers that died under it; `slot` and `pid` are those of the last
        poison_task,
        /// the event stream (pool::async_next_event) dropped events because its consumer
        /// was slow; the description says how many; `slot` and `pid` are 0
        events_dropped,
    };
    kind what = kind::started;
    /// Index of the worker's slot in the pool, 0 .. workers-1; stable across restarts.
    std::size_t slot = 0;
    int pid = 0;
    /// Plain words, e.g. "worker 4242 was killed by signal SIGSEGV while busy; restarting
    /// in 96 ms".
    std::string description;
};

/// Called on the pool's executor for every event, from inside the pool's event handling:
/// it must not block and must not throw. It may call the pool's operations.
using worker_event_observer = std::function<void(const worker_event&)>;

}  // namespace torchpool
