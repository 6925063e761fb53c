// A snapshot of a pool's state and history.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace torchpool {

/// A distribution of durations in fixed buckets, cheap enough to fill on every task: bucket
/// i counts the durations below `bounds_us[i]` and not below the bound before it; the last
/// bucket counts the rest. The bounds follow Prometheus's 1-2.5-5 steps, from 50 µs to 60 s,
/// so that a server can export them as a histogram as they are.
struct latency_histogram {
    static constexpr std::size_t buckets = 20;
    static constexpr std::array<std::uint64_t, buckets - 1> bounds_us = {
        50,        100,       250,        500,        1'000,     2'500,   5'000,
        10'000,    25'000,    50'000,     100'000,    250'000,   500'000, 1'000'000,
        2'500'000, 5'000'000, 10'000'000, 30'000'000, 60'000'000};

    std::array<std::uint64_t, buckets> counts{};
    std::uint64_t count = 0;
    std::uint64_t sum_us = 0;

    void add(std::chrono::microseconds d) noexcept {
        const auto us = static_cast<std::uint64_t>(std::max<std::int64_t>(0, d.count()));
        const auto at = std::upper_bound(bounds_us.begin(), bounds_us.end(), us);
        ++counts[static_cast<std::size_t>(at - bounds_us.begin())];
        ++count;
        sum_us += us;
    }
    /// The upper bound (µs) of the bucket that holds quantile `q` (0..1): an estimate no
    /// lower than the true value; 0 when empty, and the largest bound past it.
    std::uint64_t quantile_us(double q) const noexcept {
        if (count == 0) {
            return 0;
        }
        const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count - 1)) + 1;
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < buckets - 1; ++i) {
            seen += counts[i];
            if (seen >= rank) {
                return bounds_us[i];
            }
        }
        return bounds_us.back();
    }
};

struct pool_stats {
    // Workers by state, now.
    std::size_t workers_starting = 0;  ///< process started, not ready yet
    std::size_t workers_idle = 0;      ///< ready, no task
    std::size_t workers_busy = 0;      ///< running a task
    std::size_t workers_stopping = 0;  ///< asked or forced to exit, not reaped yet
    std::size_t workers_backoff = 0;   ///< waiting to be started again after a failure
    std::size_t workers_waiting = 0;   ///< waiting for their turn to start (or the fork server)
    std::size_t workers_stopped = 0;   ///< stopped for good (shutdown)
    std::size_t queue_depth = 0;       ///< tasks waiting for a worker
    /// The size the pool keeps now (pool_params::workers, grown, shrunk or resized)
    std::size_t workers_target = 0;
    bool degraded = false;        ///< workers cannot be started; tasks fail fast
    bool restarts_paced = false;  ///< restart intensity reached; restarts are paced

    // Configuration in effect.
    unsigned intra_op_threads = 0;  ///< per worker (pool_params::intra_op_threads, resolved)
    unsigned inter_op_threads = 0;  ///< per worker (pool_params::inter_op_threads, resolved)
    /// The soft limit on open files (RLIMIT_NOFILE) once the pool was made: the pool
    /// raises it when its workers' descriptors would not fit (a `notice` event says so).
    std::uint64_t open_files_limit = 0;

    // The fork server (start_mode::fork_server only).
    int fork_server_pid = 0;  ///< 0 when it is not running
    bool fork_server_ready = false;
    std::uint64_t fork_server_starts = 0;  ///< processes started, restarts included
    std::uint64_t fork_server_deaths = 0;  ///< exits the pool did not ask for

    // Tasks by outcome, since the pool was made.
    std::uint64_t submitted = 0;
    std::uint64_t succeeded = 0;
    std::uint64_t task_failed = 0;
    std::uint64_t worker_died = 0;
    std::uint64_t timed_out = 0;
    std::uint64_t protocol_errors = 0;
    std::uint64_t memory_limit = 0;  ///< failed with errc::memory_limit
    std::uint64_t overloaded = 0;
    std::uint64_t spawn_failed = 0;
    std::uint64_t cancelled = 0;
    std::uint64_t rejected = 0;      ///< invalid request or pool shutting down
    std::uint64_t poison_tasks = 0;  ///< failed with errc::poison_task (quarantined included)
    std::uint64_t quarantined = 0;   ///< of those, refused at submission (fingerprint known)
    /// runs of idempotent tasks again after their worker failed (request::retries)
    std::uint64_t retried = 0;
    /// tasks that waited for room in a full queue (when_full::wait) before being admitted
    std::uint64_t waited_for_room = 0;
    std::size_t waiting_for_room = 0;  ///< such tasks waiting now
    /// events the event stream dropped because its consumer was slow
    std::uint64_t events_dropped = 0;

    // Worker processes, since the pool was made.
    std::uint64_t spawned = 0;   ///< processes started
    std::uint64_t restarts = 0;  ///< starts that replaced a worker that had exited
    /// restarts held back by the restart intensity (pool_params::restart_limit)
    std::uint64_t paced_restarts = 0;
    std::uint64_t failed_starts = 0;  ///< processes that never became ready
    /// times a loading worker past load_timeout was given more time for using CPU (a busy
    /// machine slows starts; pool_params::load_extensions)
    std::uint64_t load_extensions = 0;
    std::uint64_t deaths_by_signal = 0;  ///< unexpected deaths, killed by a signal
    std::uint64_t deaths_by_exit = 0;    ///< unexpected deaths, exited on their own
    std::uint64_t killed_by_pool = 0;    ///< stopped by the pool (deadline, protocol, cancel)
    std::uint64_t unresponsive = 0;      ///< idle workers that did not answer a heartbeat
    std::uint64_t memory_kills = 0;      ///< over the hard memory limit (pool or kernel)
    std::uint64_t recycled = 0;          ///< replaced on purpose (soft memory limit)
    /// Why the last failed start failed, in plain words; empty if none has.
    std::string last_start_error;

    // Shared memory (pool_params::shared_memory).
    std::uint64_t input_memory_bytes = 0;  ///< size of the pool's input memory
    std::uint64_t input_memory_used = 0;   ///< in tensors callers or tasks hold now
    std::uint64_t input_memory_peak = 0;   ///< the most ever used at once
    std::uint64_t output_memory_held = 0;  ///< workers' results that callers hold now
    std::uint64_t tensors_inline = 0;      ///< tensors sent in their message (small ones)
    std::uint64_t tensors_shared = 0;      ///< tensors sent through shared memory
    /// Large tensors that went inline because the input memory was full when they were
    /// submitted (copied on the submitting thread and again by the kernel).
    std::uint64_t input_memory_full = 0;

    // Latency distributions, since the pool was made.
    latency_histogram start_to_ready;  ///< from a worker process's start to its hello
    latency_histogram queue_wait;      ///< from submission to being sent to a worker
    latency_histogram run_time;        ///< from a task's start on its worker to its reply
};

}  // namespace torchpool
