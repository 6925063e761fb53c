// A pool's health, for liveness and readiness probes: computed from the real state of its
// workers, and readable from any thread.
#pragma once

#include <cstddef>
#include <string>

namespace torchpool {

struct pool_health {
    /// `async_run` is running: the pool supervises its workers (false before it runs, and
    /// once it has finished).
    bool live = false;
    /// Live, admitting tasks, not degraded, and at least `pool_params::min_ready_workers`
    /// workers are ready (idle or busy).
    bool ready = false;
    /// Workers cannot be started: tasks fail at once with `errc::spawn_failed`.
    bool degraded = false;
    /// Graceful shutdown has begun: no new task is admitted.
    bool draining = false;
    std::size_t ready_workers = 0;
    std::size_t workers = 0;  ///< the pool's size (pool_params::workers)
    /// Why it is not ready, in plain words; empty when it is.
    std::string reason;
    /// Shared memory for tensors (pool_params::shared_memory), now: the size of the pool's
    /// input memory, what tensors that callers or tasks hold use of it, and the workers'
    /// results that callers hold. A pool whose input memory stays full makes its callers
    /// wait (`async_allocate`) or send their tensors inline.
    std::size_t input_memory_bytes = 0;
    std::size_t input_memory_used = 0;
    std::size_t output_memory_held = 0;
};

}  // namespace torchpool
