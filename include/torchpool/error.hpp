// Error codes of torchpool, their category, and the conditions that group them.
#pragma once

#include <boost/system/error_code.hpp>

#include <type_traits>

namespace torchpool {

/// What went wrong with a task or with the pool. A task's completion carries one of these
/// (or `boost::asio::error::operation_aborted` when its caller cancelled it), together with
/// a `task_diagnostics` value that says exactly why.
enum class errc {
    /// The queue was full, so the task was not admitted; nothing ran.
    overloaded = 1,
    /// The worker running the task exited or was killed by a signal while running it.
    worker_died,
    /// The task passed its deadline, queued or running; a running worker was stopped.
    timeout,
    /// The worker's handler reported an error (threw); the worker stays up.
    task_failed,
    /// The worker sent a malformed, oversize or unexpected message; it was killed.
    protocol_error,
    /// Workers cannot be started (the pool is degraded); the diagnostics hold the last
    /// spawn error.
    spawn_failed,
    /// The pool is shutting down or has stopped, and admits no new task.
    shutting_down,
    /// The request itself is invalid (an empty method name, a tensor whose byte size does
    /// not match its shape and type); nothing ran.
    invalid_request,
    /// A frame announced a size over the configured limit.
    frame_too_large,
    /// A frame's segment table or content is not a valid Cap'n Proto message of our schema.
    frame_malformed,
    /// The stream ended in the middle of a frame.
    frame_truncated,
    /// The worker running the task went over its hard memory limit
    /// (pool_params::memory.hard_limit_bytes): the pool killed it, or the kernel's OOM
    /// killer did inside its memory cgroup. The diagnostics hold the figures.
    memory_limit,
    /// The task was running when `pool_params::poison.deaths` workers failed (died, were
    /// killed for memory, broke the protocol), so it is not run again; or a task with the
    /// same fingerprint did so before and it is quarantined. The diagnostics list each death.
    poison_task,
    /// `pool::allocate` found no room in the pool's input memory now: tensors that callers
    /// or running tasks hold fill it (`async_allocate` waits for room instead).
    shared_memory_full,
};

/// Groups of `errc` values, for callers that care about the kind of failure only.
enum class condition {
    /// The worker failed the task (died, hung past the deadline, broke the protocol); the
    /// task itself may be fine.
    worker_failure = 1,
    /// Submitting the same task again later may succeed.
    retryable,
    /// The pool refused work because of load or lack of workers (or of shared memory).
    overload,
};

const boost::system::error_category& error_category() noexcept;
const boost::system::error_category& condition_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

inline boost::system::error_condition make_error_condition(condition c) noexcept {
    return {static_cast<int>(c), condition_category()};
}

}  // namespace torchpool

template <>
struct boost::system::is_error_code_enum<torchpool::errc> : std::true_type {};

template <>
struct boost::system::is_error_condition_enum<torchpool::condition> : std::true_type {};
