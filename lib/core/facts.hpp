// What the core's units tell the report (report.hpp) about what happened: plain values, no
// wording and no counting. The report is the one place that turns each fact into counters,
// worker events and sentences; a unit that learns something states the fact and moves on.
// Facts live only for the call that applies them, so they may refer to the caller's data.
#pragma once

#include "supervised_child.hpp"
#include "types.hpp"
#include <torchpool/task.hpp>

#include <chrono>
#include <cstdint>
#include <string>

namespace torchpool::core::facts {

// Tasks (how a task ends is counted by report::task_ended).

struct task_submitted {};
/// Refused: its fingerprint is quarantined.
struct task_quarantined {};
/// The queue was full; it waits for room.
struct task_waits_for_room {};
struct task_sent {
    clock::duration queue_wait;
};
struct task_answered {
    clock::duration run_time;
};
/// A worker failed under it and it runs again.
struct task_retried {};
/// It failed under as many workers as poison_params::deaths allows.
struct poison_task {
    slot_id slot;
    int pid;
    const std::string& summary;
};

// Worker processes.

/// A slot's process is being started again.
struct worker_restarting {};
struct worker_spawned {
    slot_id slot;
    int pid;
};
/// It said hello. `recovered`: the pool was degraded until now.
struct worker_ready {
    slot_id slot;
    int pid;
    time_point started;
    time_point now;
    bool recovered;
};
/// A worker or the fork server loading past load_timeout used CPU, and got more time.
struct load_extended {};
/// A start never became ready (it died, broke the protocol, or timed out while loading).
struct start_failed {};
/// What comes next for a slot whose process ended or could not be made.
struct next_start {
    child_state state;
    time_point at;  ///< its restart time when in backoff; max: when its turn comes
    time_point now;
};
/// A slot's process could not be made at all.
struct spawn_failed {
    slot_id slot;
    const std::string& why;
    next_start next;
};
/// A ready worker died on its own.
struct worker_died {
    bool by_signal;
};
/// A worker was reaped. `was`: what it was doing, in the host's terms.
struct worker_exited {
    slot_id slot;
    int pid;
    const std::string& how;  ///< describe_exit's words
    const char* was;
    next_start next;
};
/// The kernel's OOM killer killed it at its memory cgroup's limit.
struct oom_killed {
    slot_id slot;
    int pid;
    std::uint64_t limit;
};
/// The pool read its memory over the hard limit, and kills it.
struct over_memory_limit {
    slot_id slot;
    int pid;
    std::uint64_t held;
    std::uint64_t limit;
};
/// The pool stopped a worker for a failure (not on purpose).
struct killed_by_pool {};
/// An idle worker did not answer its heartbeat in time.
struct unresponsive {
    slot_id slot;
    const task_diagnostics& diagnostics;
    std::chrono::milliseconds timeout;
};
/// A worker did not stop the task its caller cancelled within cancel_grace.
struct cancel_ignored {
    slot_id slot;
    const task_diagnostics& diagnostics;
    std::chrono::milliseconds grace;
};
/// A worker is to be replaced on purpose; `in_place`: no spare slot, so after its task.
struct recycling {
    slot_id slot;
    int pid;
    const std::string& reason;
    bool in_place;
};

// The pool as a whole.

/// Starts failed in a row and no worker is ready: tasks fail at once.
struct degraded {
    std::size_t after_failures;
    const std::string& last_error;
};
/// A restart's pacing by the restart intensity.
struct restart_paced {
    bool paced;  ///< this restart waits for the intensity
    bool began;  ///< pacing began with it
    bool ended;  ///< pacing ended with it
    std::size_t intensity;
    std::chrono::milliseconds period;
};
struct resized {
    std::size_t workers;
};
/// Anything else the host should know (a `notice` event).
struct notice {
    std::string what;
};

// The fork server.

struct fork_server_starting {};
struct fork_server_spawned {
    int pid;
};
struct fork_server_ready {
    int pid;
    time_point started;
    time_point now;
};
struct fork_server_protocol_error {};
/// It was reaped, or could not be started; `why` says how.
struct fork_server_exited {
    int pid;
    std::string why;
};
/// A ready fork server died on its own.
struct fork_server_died {};

}  // namespace torchpool::core::facts
