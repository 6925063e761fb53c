// The vocabulary every unit of the pool's core shares: its clock, the ids of tasks and
// worker slots, how a reaped process ended, and why the pool stops a process.
#pragma once

#include "posix/exit_status.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

namespace torchpool::core {

using clock = std::chrono::steady_clock;
using time_point = clock::time_point;
using task_id = std::uint64_t;
using slot_id = std::size_t;

/// Priorities of tasks, 0 (low) .. priorities - 1 (high).
inline constexpr std::size_t priorities = 3;

/// What a submitter asks of a task besides its method.
struct task_options {
    /// Zero: no deadline.
    std::chrono::milliseconds timeout{0};
    /// Runs allowed after a worker failed under it (0: not idempotent).
    unsigned retries = 0;
    /// 0 (low) .. priorities - 1 (high).
    std::uint8_t priority = 1;
    /// Wait for room when the queue is full, instead of failing.
    bool wait_for_room = false;
    /// torchpool::fingerprint of the request, 0 if not computed.
    std::uint64_t fingerprint = 0;
};

/// How a reaped process ended (the process code's word for it).
using exit_status = posix::exit_status;

/// Why the pool stops a worker process.
enum class stop_reason {
    none,
    deadline,
    protocol,
    cancelled,
    spawn_timeout,
    unresponsive,
    memory,   ///< over its hard memory limit
    recycle,  ///< replaced on purpose: not a failure
    shrink,   ///< the pool is smaller now
    shutdown,
    pool_stop
};

/// The pool stops the worker for its own reasons, not because the worker failed: it is
/// asked to exit (a shutdown message), is not counted as killed, and its replacement, if
/// any, is not a restart the intensity limits.
constexpr bool on_purpose(stop_reason r) noexcept {
    return r == stop_reason::shutdown || r == stop_reason::pool_stop || r == stop_reason::recycle ||
           r == stop_reason::shrink;
}

}  // namespace torchpool::core
