// Configuration of a pool. Every field has a documented default; set the ones you need
// with designated initializers:
//
//     torchpool::pool_params{.worker = {.executable = worker_path}, .workers = 8}
#pragma once

#include <torchpool/events.hpp>
#include <torchpool/logger.hpp>
#include <torchpool/task.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace torchpool {

/// How worker processes are created.
enum class start_mode {
    /// Each worker is a new process of `worker_params::executable`. Until its exec it
    /// shares the host's memory, as with posix_spawn, so nothing is copied however large
    /// the host; unlike posix_spawn, the pool's thread does not wait for the exec. Works
    /// for any worker program.
    direct,
    /// The executable is started once, as a fork server, and each worker is a fork of it:
    /// what the program loaded before `worker::server::serve()` (LibTorch, a model) is
    /// loaded once and shared, copy-on-write, by every worker, which makes hundreds of
    /// workers quick to start and cheap to keep. The workers are still the pool's own
    /// children (pidfd, exact exit status); if the fork server dies, it is restarted and
    /// running workers carry on. On a machine with more than one core the server starts
    /// helper processes (one per further core) that fork workers too, since one fork of a
    /// process as large as LibTorch takes milliseconds (TORCHPOOL_FORK_SERVER_HELPERS in
    /// `env` overrides the number). The program must start no thread before serve().
    fork_server,
};

/// How to start one worker process.
struct worker_params {
    /// Path of the worker executable (built with the worker SDK, <torchpool/worker.hpp>).
    /// Required.
    std::string executable;
    /// Arguments after argv[0] (argv[0] is the executable path).
    std::vector<std::string> args;
    /// Extra environment entries, "NAME=value", added to the host's environment.
    std::vector<std::string> env;
    start_mode start = start_mode::direct;
};

/// Delay before a worker that failed is started again. The first failure of a worker that
/// had been healthy is replaced at once; each further failure of the same worker slot
/// waits `initial`, multiplied by `multiplier` per failure, capped at `max`, spread by
/// +/- `jitter` (a fraction) so that many workers do not restart in step. A worker is
/// healthy again, and its count starts over, once it answers a task or has been ready for
/// `reset_after`.
struct backoff_params {
    std::chrono::milliseconds initial{100};
    std::chrono::milliseconds max{5000};
    double multiplier = 2.0;
    double jitter = 0.2;
    std::chrono::milliseconds reset_after{1000};
};

/// Restart intensity, as OTP supervisors have it: at most `restarts` restarts of workers
/// (and the fork server) in any `period`. Past it the pool does not give up; it paces
/// further restarts to that rate, so that a crash loop or an outside killer cannot make it
/// spend the machine on starting processes. A `notice` event says when pacing begins and
/// ends. Planned replacements (recycling) do not count.
struct restart_intensity {
    /// Zero (the default): ten per worker, at least 20: enough that a pool keeps its
    /// strength while workers are killed every few milliseconds, yet a bound on the
    /// machine spent on starting processes.
    std::size_t restarts = 0;
    std::chrono::milliseconds period{1000};
};

/// Memory limits per worker, on the memory of its own (private: what its death gives back;
/// what it shares with the fork server and other workers is not counted). Zero: no limit.
struct memory_params {
    /// Over this, a worker is recycled once its current task ends: it is asked to exit and
    /// replaced; no task fails. A `recycled` event gives the figures.
    std::uint64_t soft_limit_bytes = 0;
    /// Over this, a worker is killed at once; its task fails with `errc::memory_limit` and
    /// the figures, and a `memory_limit` event says so. Where the host allows memory
    /// cgroups (cgroup v2 with the memory controller delegated to the host's cgroup, or
    /// cgroup v1 writable by the host, as root usually), each worker slot gets one: the
    /// kernel then enforces it even between samples, and the pool knows an OOM kill for
    /// certain. The kernel charges the worker's output memory (shared_memory_params) to it
    /// as well, so the cgroup's limit is this plus `worker_output_bytes`; the samples judge
    /// memory of its own exactly. A `notice` event says which mechanism is used.
    std::uint64_t hard_limit_bytes = 0;
    /// How often a busy worker's memory is read (/proc/PID/smaps_rollup, one worker at a
    /// time); idle workers are not read, and nothing is read when no limit is set.
    std::chrono::milliseconds sample_interval{500};
    /// Use a memory cgroup per worker for the hard limit where the host allows it.
    bool use_cgroups = true;
    /// Also cap each worker's address space (RLIMIT_AS) at the hard limit, so that an
    /// allocation past it fails inside the worker (a handler's std::bad_alloc becomes
    /// `errc::task_failed`) rather than the process being killed. Off by default: address
    /// space counts reservations never touched (LibTorch and allocators reserve a lot).
    bool limit_address_space = false;
};

/// Planned replacement of workers (recycling), a guard against slow leaks and heap
/// fragmentation. The replacement is started first and takes over once it is ready; the old
/// worker then finishes its task and exits. No task fails. Zero: off.
struct recycle_params {
    /// Replace a worker after it has answered this many tasks.
    std::size_t max_tasks = 0;
    /// Replace a worker after it has been ready this long, spread by +/- `jitter` per
    /// worker, so that workers started together are not all replaced together.
    std::chrono::milliseconds max_age{0};
    double jitter = 0.1;
    /// Workers being replaced at the same time (the pool keeps a spare slot for each).
    std::size_t max_at_once = 1;
};

/// Poison tasks: a task that makes every worker that runs it fail (a crash in the handler on
/// that input, a memory blow-up) must not take the pool down with retries.
struct poison_params {
    /// A task is a poison task once this many workers failed under it (died, were killed
    /// for their memory, broke the protocol): it completes with `errc::poison_task` listing
    /// each death and is not retried again. Zero: never (retries run out instead).
    std::size_t deaths = 2;
    /// Fingerprints (`torchpool::fingerprint`) of poison tasks remembered, the oldest
    /// forgotten first: a task submitted again with the same fingerprint fails at once with
    /// `errc::poison_task` (quarantined), without costing a worker. Zero (the default): off,
    /// since a task may have been caught in a failure that was not its own (the machine ran
    /// out of memory).
    std::size_t quarantine = 0;
};

/// The worker and task a fault may be injected into, as the task is sent (see
/// `fault_params::choose`).
struct fault_target {
    std::size_t slot = 0;
    int worker_pid = 0;
    std::string_view method;
    /// 1 for the task's first run, 2 for its first retry, ...
    std::size_t attempt = 1;
};

/// Fault injection, for testing a host's own failure handling against real failures. Off
/// by default: with it off, a request carrying a fault is refused (`errc::invalid_request`)
/// and workers ignore faults.
struct fault_params {
    bool enabled = false;
    /// Chooses a fault for each task as it is sent to a worker (on the pool's executor; it
    /// must not block): e.g. crash the first attempt of every tenth task, or make slot 2
    /// hang. It wins over the request's own `request::inject` when it returns one. Optional.
    std::function<fault(const fault_target&)> choose;
};

/// Shared memory for tensor bytes (the data plane). Tensors travel between the host and the
/// workers through memory both map, so that the pool's thread never copies or touches
/// their bytes; small ones ride inline in the message, which is faster for them.
struct shared_memory_params {
    /// The pool's input memory, where `pool::allocate` places tensors and where large
    /// tensors of a request are copied (once, on the submitting thread). Workers map it
    /// read-only. Address space only until used: pages are taken as tensors fill them.
    /// Zero turns the data plane off: every tensor is copied into its message.
    std::size_t input_bytes = std::size_t(1) << 30;
    /// Each worker's output memory, where its large results go; the caller's response holds
    /// them there until it is destroyed. A result that finds it full goes inline. Its pages
    /// are not the worker's own memory for memory limits (worker_memory::shared_memory_bytes).
    std::size_t worker_output_bytes = std::size_t(256) << 20;
    /// Tensors of fewer bytes go inline in the message. Measured (bench/tensor_transfer, its
    /// last table): up to 16 KiB inline and shared memory are as fast (0.95-1.02x); from
    /// 32-64 KiB shared memory is as fast or faster, 2x at 256 KiB, 4x at 1 MiB.
    std::size_t inline_below = 16 * 1024;
};

struct pool_params {
    worker_params worker;
    /// Number of worker processes kept running (the size the pool starts with). At least 1.
    std::size_t workers = 1;
    /// Elastic size: the pool starts `workers` and, while tasks wait for a worker, starts
    /// more, up to `max_workers` (zero: `workers`; never while degraded); workers idle for
    /// `idle_timeout` are stopped, down to `min_workers` (zero: `workers`). With a hard
    /// memory limit set, the pool grows only while the machine has that much available
    /// (MemAvailable). `pool::resize` changes the size at run time. Descriptors for
    /// `max_workers` are reserved up front.
    std::size_t min_workers = 0;
    std::size_t max_workers = 0;
    std::chrono::milliseconds idle_timeout{60'000};
    recycle_params recycle;
    /// Tasks that may wait for a worker; one more completes at once with `errc::overloaded`.
    std::size_t queue_limit = 1024;
    /// Tasks sent to a busy worker ahead of time, so that it never waits for the pool
    /// between tasks. Zero (the default): a worker gets its next task only when it has
    /// replied to the last, which gives the lowest latency and the fairest dispatch when
    /// tasks differ in length. One or more raises throughput for short tasks. A prefetched
    /// task has not started: if its worker dies, it goes back to the head of the queue.
    std::size_t prefetch = 0;
    /// Deadline of a task whose request sets none. Zero: no deadline.
    std::chrono::milliseconds task_timeout{0};
    /// Time from asking for a worker process to having one. A direct start has it at once;
    /// in fork-server mode, a fork server that has not handed the worker over within this
    /// is stuck: it is killed and restarted, and the worker is asked of the next one.
    std::chrono::milliseconds spawn_timeout{10'000};
    /// Time a worker process (or the fork server) has, once it exists, to load what it
    /// needs and say hello; past it, it is killed and counted as a failed start. Unless it
    /// is making progress: a worker that used CPU time since it started (or since the last
    /// look) gets load_timeout again, up to `load_extensions` times, because a machine whose
    /// cores are busy with other work slows every start; one that used none is stuck.
    std::chrono::milliseconds load_timeout{60'000};
    /// Times a worker still loading, but using CPU, gets load_timeout again (see there).
    /// 0: never.
    std::size_t load_extensions = 3;
    /// Workers being started at the same time (process up, not yet ready); the others wait
    /// their turn, so that a burst of hundreds of starts does not starve the workers that
    /// are already running tasks. Zero (the default): twice the number of cores, at least 4.
    std::size_t max_concurrent_starts = 0;
    /// Threads of each worker's LibTorch intra-op pool (and OpenMP), passed to workers as
    /// TORCHPOOL_INTRA_OP_THREADS and OMP_NUM_THREADS. Zero (the default): the cores this
    /// process may use divided by `workers`, at least 1, so that workers do not
    /// oversubscribe the cores. `pool::stats()` shows the choice.
    unsigned intra_op_threads = 0;
    /// Threads of each worker's LibTorch inter-op pool (TORCHPOOL_INTER_OP_THREADS). Zero
    /// (the default): as for `intra_op_threads`.
    unsigned inter_op_threads = 0;
    /// An idle worker is sent a heartbeat once it has been idle this long (the worker SDK
    /// answers it at once), and again every interval after. Zero: no heartbeats.
    std::chrono::milliseconds heartbeat_interval{5'000};
    /// A worker that has not answered a heartbeat within this time is unresponsive
    /// (stopped, deadlocked, stuck in the kernel): it takes no task meanwhile, and is
    /// stopped (SIGTERM, then SIGKILL after stop_grace) and replaced. An `unresponsive`
    /// event says what the kernel showed it doing.
    std::chrono::milliseconds heartbeat_timeout{5'000};
    /// Memory limits per worker (none by default).
    memory_params memory;
    /// Workers that must be ready (idle or busy) for `pool::health()` to say ready. At
    /// least 1.
    std::size_t min_ready_workers = 1;
    /// Time a worker has to exit after it was asked to (shutdown message or SIGTERM)
    /// before it gets SIGKILL.
    std::chrono::milliseconds stop_grace{2'000};
    backoff_params restart_backoff;
    restart_intensity restart_limit;
    /// The pool is *degraded* (it cannot start workers) when this many starts in a row, of
    /// any worker slot or of the fork server, failed with no start succeeding in between,
    /// no worker is ready, and no start has succeeded for `degraded_window` (or ever).
    /// Deaths of workers that did start never count. While degraded, queued and new tasks
    /// fail at once with `errc::spawn_failed` and the last start error instead of waiting
    /// forever; the pool keeps trying, and the first worker that becomes ready ends it
    /// (`degraded` and `recovered` events say so).
    std::size_t spawn_failures_until_degraded = 3;
    std::chrono::milliseconds degraded_window{10'000};
    /// Time a worker has to answer after the caller of its running task cancelled it
    /// (terminal cancellation): the worker is told at once and may stop early; if it has not
    /// answered within this time it is killed and replaced.
    std::chrono::milliseconds cancel_grace{1'000};
    poison_params poison;
    fault_params faults;
    /// Events kept for `pool::async_next_event` until a consumer takes them; past it the
    /// oldest are dropped and counted (a `events_dropped` event says how many). Zero: no
    /// event stream.
    std::size_t event_buffer = 256;
    /// Receives every line the workers (and the fork server) write to stdout and stderr, as
    /// it is written, with its slot and pid (on the pool's executor). Optional.
    log_observer on_log_line;
    /// Largest message accepted from a worker; a bigger one is a protocol error.
    std::size_t max_frame_bytes = 64u << 20;
    /// Shared memory for tensors (see shared_memory_params).
    shared_memory_params shared_memory;
    /// Bytes of each worker's most recent stdout/stderr kept for diagnostics.
    std::size_t log_tail_bytes = 4096;
    /// Told about every worker start, readiness and exit (on the pool's executor). Optional.
    worker_event_observer on_worker_event;
    /// Seed of the backoff jitter; fixed so that runs are reproducible.
    std::uint64_t seed = 0x7f4a7c15u;
};

}  // namespace torchpool
