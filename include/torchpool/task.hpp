// The values that go into and come out of a task: request, tensors, response, diagnostics.
#pragma once

#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace torchpool {

/// Element type of a tensor, as it crosses the wire.
enum class dtype : std::uint8_t {
    float32,
    float64,
    float16,
    bfloat16,
    int64,
    int32,
    int16,
    int8,
    uint8,
    boolean,
};

/// Size in bytes of one element of `t`.
std::size_t element_size(dtype t) noexcept;

/// Name of `t` as LibTorch spells it ("float32", "int64", "bool", ...).
const char* dtype_name(dtype t) noexcept;

namespace detail {
class shared_region;  // a block of shared memory, as the library keeps it (lib/shm)
}

/// Tensor bytes in memory that a pool and its workers share: a tensor the caller allocated
/// with `pool::allocate` (writable, to be filled in place before it is submitted), or a
/// result a worker wrote (read-only). Nothing is copied on the way to or from a worker.
///
/// Copies share the bytes, as copies of a torch::Tensor do. The bytes stay valid while any
/// copy is alive, even after the pool, or the worker that wrote them, is gone; the pool
/// reuses the memory once the last copy is destroyed. Do not write to a tensor while a task
/// it was submitted with is running.
class shared_bytes {
public:
    shared_bytes() = default;
    /// For the library: `size` bytes at `data`, kept alive by `region`.
    shared_bytes(std::shared_ptr<const detail::shared_region> region, std::byte* data,
                 std::size_t size, bool writable) noexcept
        : region_(std::move(region)), data_(data), size_(size), writable_(writable) {}

    explicit operator bool() const noexcept { return region_ != nullptr; }
    std::size_t size() const noexcept { return size_; }
    std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
    /// True for memory the caller allocated; false for a worker's result.
    bool writable() const noexcept { return writable_; }
    /// The bytes, to fill in place; empty unless `writable()`.
    std::span<std::byte> writable_bytes() const noexcept {
        return writable_ ? std::span<std::byte>(data_, size_) : std::span<std::byte>();
    }
    const std::shared_ptr<const detail::shared_region>& region() const noexcept { return region_; }
    /// `length` bytes from `offset` of these, sharing them (clamped to what there is).
    shared_bytes slice(std::size_t offset, std::size_t length) const noexcept {
        offset = offset < size_ ? offset : size_;
        length = length < size_ - offset ? length : size_ - offset;
        return {region_, data_ + offset, length, writable_};
    }

private:
    std::shared_ptr<const detail::shared_region> region_;
    std::byte* data_ = nullptr;
    std::size_t size_ = 0;
    bool writable_ = false;
};

/// A dense tensor: contiguous row-major bytes in native byte order, held either in `data`
/// (the caller's own bytes; the pool copies them into shared memory once, on the caller's
/// thread, when they are large) or in `shared` (shared memory: never copied). Read them
/// with `bytes()`, which works for both; a worker's large results come back in `shared`.
///
/// Not an aggregate, on purpose: see `request`.
struct tensor {
    tensor() = default;
    tensor(dtype type, std::vector<std::int64_t> shape, std::string data = {})
        : type(type), shape(std::move(shape)), data(std::move(data)) {}
    tensor(dtype type, std::vector<std::int64_t> shape, shared_bytes shared)
        : type(type), shape(std::move(shape)), shared(std::move(shared)) {}

    dtype type = dtype::float32;
    std::vector<std::int64_t> shape;
    /// The caller's own bytes, exactly product(shape) * element_size(type) of them; empty
    /// when `shared` holds them.
    std::string data;
    /// The bytes in shared memory, when they are there (then `data` is empty).
    shared_bytes shared;

    /// The tensor's bytes, wherever they are.
    std::span<const std::byte> bytes() const noexcept {
        return shared ? shared.bytes() : std::as_bytes(std::span(data.data(), data.size()));
    }
    /// The bytes as characters (for comparisons and std::string APIs).
    std::string_view chars() const noexcept {
        const auto b = bytes();
        return {reinterpret_cast<const char*>(b.data()), b.size()};
    }
    /// The bytes, to fill in place: `data`'s, or shared memory the caller allocated; empty
    /// for a worker's result.
    std::span<std::byte> writable_bytes() noexcept {
        return shared ? shared.writable_bytes() : std::as_writable_bytes(std::span(data));
    }
};

/// A tensor whose bytes live elsewhere, read without copying: in a received message (a
/// worker's view of its request), or in memory that `owner` keeps alive (a worker's result,
/// e.g. a torch::Tensor's storage, copied once, straight into the reply).
struct tensor_view {
    dtype type = dtype::float32;
    std::vector<std::int64_t> shape;
    std::span<const std::byte> data;
    /// Keeps `data` alive, when the view must outlive the call that made it. May be null.
    std::shared_ptr<const void> owner;

    /// A view of `t`, which must outlive it.
    static tensor_view of(const tensor& t);
    /// A view that owns `t`.
    static tensor_view owning(tensor t);
    /// A copy of the bytes, as an owning tensor.
    tensor copy() const;
};

/// How urgent a task is: a queued task of a higher priority is sent to a worker before any
/// task of a lower one; tasks of one priority are sent in submission order.
enum class task_priority : std::uint8_t { low, normal, high };

/// What `async_submit` does when the queue already holds `pool_params::queue_limit` tasks.
enum class when_full : std::uint8_t {
    /// Complete at once with `errc::overloaded`; nothing runs.
    fail,
    /// Wait for room, for as long as the task's own deadline and cancellation allow.
    wait,
};

/// A failure a worker provokes on purpose, so that a host can test its own retry, timeout
/// and error handling against real crashes (see `pool_params::faults`, off by default). The
/// worker SDK applies it to the task it comes with, before the handler would run, so it works
/// for the stock LibTorch worker and every worker built with the SDK.
struct fault {
    enum class kind : std::uint8_t {
        none,
        crash,    ///< the worker raises signal `value` (SIGSEGV by default)
        exit,     ///< the worker exits at once with code `value`
        hang,     ///< the worker blocks forever (a deadlock), answering nothing
        leak,     ///< the worker allocates and touches `value` bytes and keeps them, then
                  ///< runs the task
        delay,    ///< the worker waits `value` milliseconds, then runs the task (slow answer)
        garbage,  ///< the worker writes bytes that are not a message instead of its reply
        fail,     ///< the handler fails: the task completes with errc::task_failed
    };
    kind what = kind::none;
    std::uint64_t value = 0;

    static fault crash(int signo = 11) { return {kind::crash, static_cast<std::uint64_t>(signo)}; }
    static fault exit(int code) { return {kind::exit, static_cast<std::uint64_t>(code)}; }
    static fault hang() { return {kind::hang, 0}; }
    static fault leak(std::uint64_t bytes) { return {kind::leak, bytes}; }
    static fault delay(std::chrono::milliseconds d) {
        return {kind::delay, static_cast<std::uint64_t>(d.count())};
    }
    static fault garbage() { return {kind::garbage, 0}; }
    static fault fail() { return {kind::fail, 0}; }

    explicit operator bool() const noexcept { return what != kind::none; }
    friend bool operator==(const fault&, const fault&) = default;
};

/// "crash with SIGSEGV", "leak 64.0 MiB", ...
std::string describe_fault(const fault& f);

/// One unit of work for a worker.
///
///     auto result =
///         co_await pool.async_submit(torchpool::request("echo", bytes), asio::use_awaitable);
///
/// `request` and `tensor` have constructors, so they are not aggregates, because GCC 12
/// (Debian 12's compiler) miscompiles a braced *aggregate* temporary inside a `co_await`
/// expression: `co_await op(my_aggregate{.a = x, .b = y}, ...)` frees the temporary's
/// members twice (GCC bug 107288 and its duplicates; Clang is fine). Built with a
/// constructor, as here, the same expression is safe. If you pass your own aggregate types
/// to asynchronous operations in coroutines, build them in a variable first, or give them
/// a constructor. A braced list inside `co_await` (`request("m", {}, {t1, t2})`) does not
/// compile with GCC 12 ("array used as initializer"): build the tensor vector first.
struct request {
    request() = default;
    request(std::string method, std::string payload = {}, std::vector<tensor> tensors = {})
        : method(std::move(method)), payload(std::move(payload)), tensors(std::move(tensors)) {}

    /// The same request with `timeout` set: `request("forward", bytes).with_timeout(2s)`.
    request with_timeout(std::chrono::milliseconds t) && {
        timeout = t;
        return std::move(*this);
    }

    /// The same request, idempotent: if its worker fails under it (dies, is killed for its
    /// memory, breaks the protocol), it runs again on another worker, up to `n` more times,
    /// never after its deadline (see `retries`).
    request with_retries(unsigned n) && {
        retries = n;
        return std::move(*this);
    }
    request with_priority(task_priority p) && {
        priority = p;
        return std::move(*this);
    }
    /// The same request, waiting for room when the queue is full instead of failing.
    request wait_when_full() && {
        if_full = when_full::wait;
        return std::move(*this);
    }
    /// The same request, provoking `f` in the worker that runs it (pool_params::faults).
    request with_fault(fault f) && {
        inject = f;
        return std::move(*this);
    }

    /// Name of the handler the worker registered (e.g. "forward", "echo").
    std::string method;
    /// Opaque bytes for the handler.
    std::string payload;
    std::vector<tensor> tensors;
    /// Time allowed from submission (queue wait included) to reply. Zero means the pool's
    /// `pool_params::task_timeout`, and zero there means no deadline.
    std::chrono::milliseconds timeout{0};
    /// Zero (the default): the task is not idempotent and runs at most once. N: it may run
    /// N more times after a worker failed under it (death, memory kill, protocol error), on
    /// another worker, while its deadline has not passed; `response::attempts` lists them.
    /// A task under which `pool_params::poison.deaths` workers failed is not run again.
    unsigned retries = 0;
    task_priority priority = task_priority::normal;
    when_full if_full = when_full::fail;
    /// A failure to provoke, for tests (pool_params::faults must allow it).
    fault inject;
};

/// A 64-bit hash of what a request asks: its method, payload and tensors (types, shapes,
/// bytes); not its options. Two requests with the same fingerprint ask the same thing (up to
/// hash collisions); a poison task is recognised by it when it is submitted again.
std::uint64_t fingerprint(const request& req);

/// A worker's memory, as the kernel counts it (/proc/PID/smaps_rollup).
struct worker_memory {
    /// Pages only this worker maps: what its death gives back. For a worker forked from
    /// the fork server, the library and weights it shares with the others are not in it;
    /// nor is tensor shared memory, when `shared_memory_bytes` is set. Memory limits judge
    /// this figure.
    std::uint64_t private_bytes = 0;
    /// Its proportional share: private pages, plus each shared page divided by the number
    /// of processes that map it. The PSS of all workers adds up to what they cost together.
    std::uint64_t pss_bytes = 0;
    /// Every page it maps that is in memory, shared or not (what `ps` and `top` show).
    std::uint64_t rss_bytes = 0;
    /// The tensor shared memory it maps that is in memory: its output memory (results it
    /// wrote, bounded by pool_params::shared_memory.worker_output_bytes) and the pages of
    /// input memory it read. Telling it apart takes a longer read of /proc/PID/smaps (a few
    /// ms), done only when a worker's memory is within 80% of a memory limit; nullopt
    /// otherwise, and then `private_bytes` may include results it wrote that the host has
    /// not read yet.
    std::optional<std::uint64_t> shared_memory_bytes;
};

/// What the kernel said a worker was doing when the pool gave up on it (a missed deadline,
/// a heartbeat left unanswered, a cancellation), read from /proc/PID just before it was
/// stopped. Fields the kernel would not show are empty.
struct worker_activity {
    /// The state letter: 'R' running, 'S' sleeping, 'D' uninterruptible wait (disk, a
    /// driver), 'T' stopped (SIGSTOP, a debugger), 'Z' exited.
    char state = 0;
    /// The kernel function it sleeps in (/proc/PID/wchan), e.g. "pipe_read", "futex_wait_queue"
    /// or "hrtimer_nanosleep"; empty while it runs.
    std::string wchan;
    /// The system call it is blocked in, by name where known ("read", "futex"), else its
    /// number; empty when it is not in one (running user code, or unreadable).
    std::string syscall;
    /// /proc/PID/syscall as the kernel wrote it: number, arguments, stack and instruction
    /// pointers; "running" when in user code.
    std::string syscall_line;
    /// The kernel stack (/proc/PID/stack), one frame per line; readable by root only.
    std::string kernel_stack;
};

/// Why a task failed, in enough detail that the caller never has to search a log.
/// Filled in on every failed completion; empty on success.
struct task_diagnostics {
    /// One or two plain sentences saying what happened.
    std::string summary;
    /// Process id of the worker involved, 0 if none was.
    int worker_pid = 0;
    /// The worker's exit code, if it exited normally.
    std::optional<int> exit_code;
    /// The signal that terminated the worker, if one did.
    std::optional<int> signal;
    bool core_dumped = false;
    /// The worker's memory, read just before the pool stopped it (deadline, cancellation,
    /// protocol error). Empty when the worker died on its own: the pool reads a worker's
    /// memory only while it is alive, and no longer trusts the kernel's peak figure for a
    /// child (ru_maxrss), which counts the memory of the process it was copied from.
    std::optional<worker_memory> memory;
    /// What the worker was doing in the kernel when the pool gave up on it (deadline,
    /// unanswered heartbeat, cancellation); empty otherwise.
    std::optional<worker_activity> activity;
    /// How long the worker process had been alive.
    std::chrono::milliseconds worker_uptime{0};
    /// How long the task had been running on the worker.
    std::chrono::milliseconds task_run_time{0};
    /// The last lines the worker wrote to its stdout and stderr.
    std::string log_tail;
    /// For `errc::task_failed`: the error type and message the worker's handler reported.
    std::string error_type;
    std::string error_message;
};

/// One run of a task on a worker.
struct task_attempt {
    /// The worker that ran it.
    int worker_pid = 0;
    /// How it ended: empty for the run that answered, else why it failed (errc::worker_died,
    /// errc::memory_limit, errc::protocol_error, ...).
    boost::system::error_code error;
    /// The sentence the caller would have read had this been the last attempt.
    std::string summary;
};

/// What a task produced. On failure only `diagnostics` and `attempts` are meaningful.
struct response {
    std::string payload;
    std::vector<tensor> tensors;
    /// Process id of the worker that ran the task (0 if it never ran).
    int worker_pid = 0;
    task_diagnostics diagnostics;
    /// Every run of a task that ran more than once (an idempotent task retried after its
    /// worker failed), oldest first, the last one included; empty when it ran at most once.
    std::vector<task_attempt> attempts;
};

/// "SIGKILL", "SIGSEGV", ...; "signal N" for a number without a name.
std::string signal_name(int signo);

}  // namespace torchpool
