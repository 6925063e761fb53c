// The worker SDK: write a worker executable for a torchpool pool.
//
//     int main() {
//         torchpool::worker::server server;
//         server.handle("echo", [](const torchpool::worker::call& c) {
//             return torchpool::worker::result{.payload = std::string(c.payload)};
//         });
//         // A long task that stops early when its caller cancels it.
//         server.handle("count", [](const torchpool::worker::call& c) {
//             for (int step = 0; step < 60'000; ++step) {
//                 c.throw_if_cancelled();  // reads the pool's cancel message, without blocking
//                 std::this_thread::sleep_for(std::chrono::milliseconds(1));  // a step of work
//             }
//             return torchpool::worker::result{.payload = "counted"};
//         });
//         return server.serve();  // hello, then requests until shutdown
//     }
//
// The server talks to the pool over the channel the pool set up (fd 3); stdout and stderr
// are free for the worker's own logs, which the pool keeps and attaches to failures.
#pragma once

#include <torchpool/task.hpp>

#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace torchpool::worker {

/// Tells a running handler whether its caller has cancelled the task (see `call::cancelled`).
class cancellation_source {
public:
    /// True once the pool has sent a cancel message for task `id`.
    virtual bool requested(std::uint64_t id) = 0;

protected:
    ~cancellation_source() = default;
};

/// Thrown by `call::throw_if_cancelled`; a handler may throw it itself. The pool's caller
/// then gets `operation_aborted` (not `errc::task_failed`).
struct cancelled_error : std::exception {
    const char* what() const noexcept override { return "the caller cancelled the task"; }
};

/// Memory for one result tensor (see `call::allocate_output`).
struct output_tensor {
    /// Fill these: product(shape) * element_size(type) bytes, 64-byte aligned.
    std::span<std::byte> bytes;
    /// Then return this in `result::tensors`; it keeps the memory alive.
    tensor_view view;
};

/// Hands out memory for results (the worker's output memory, shared with the pool).
class output_allocator {
public:
    virtual output_tensor allocate(dtype type, std::vector<std::int64_t> shape) = 0;

protected:
    ~output_allocator() = default;
};

/// One request, as a handler sees it: views into the received message or into the pool's
/// shared memory, nothing copied. Inputs in shared memory are read-only: writing to them
/// kills the worker (SIGSEGV). The views stay valid until the reply to this call has been
/// written, so a result may refer to them.
struct call {
    std::uint64_t id = 0;
    std::string_view method;
    std::string_view payload;
    /// Bytes 8-byte aligned, so that they can be wrapped in place (torch::from_blob).
    std::span<const tensor_view> tensors;
    /// CLOCK_MONOTONIC nanoseconds after which the caller has given up; 0 if none.
    std::uint64_t deadline_ns = 0;
    /// Set by the server; null in a call a test builds by hand (never cancelled).
    cancellation_source* cancellation = nullptr;
    /// Set by the server; null in a call a test builds by hand (results on the heap).
    output_allocator* outputs = nullptr;

    /// Memory for a result tensor of `type` and `shape`, in the worker's output memory: a
    /// result there reaches the pool's caller without a copy anywhere. When that memory is
    /// full (the pool's callers still hold earlier results) or absent, heap memory, which
    /// the server copies once into the reply. Throws std::invalid_argument for a negative
    /// dimension.
    output_tensor allocate_output(dtype type, std::vector<std::int64_t> shape) const;

    /// True once the caller has cancelled this task (partial, total or terminal
    /// cancellation of the pool's async_submit). Each call reads what the pool has sent,
    /// without blocking: one system call, so poll it between pieces of work (every few
    /// milliseconds), not in the innermost loop. A handler that sees it should stop and
    /// throw `cancelled_error` (`throw_if_cancelled` does both); one that returns a result
    /// anyway has it delivered.
    bool cancelled() const { return cancellation && cancellation->requested(id); }
    void throw_if_cancelled() const {
        if (cancelled()) {
            throw cancelled_error();
        }
    }
};

/// What a handler returns on success. To report a failure, throw: the pool's caller gets
/// `errc::task_failed` with the exception's type and `what()`, and this worker stays up.
struct result {
    std::string payload;
    /// Tensors in memory from `call::allocate_output` go to the caller as they are; others
    /// are copied once, into output memory (large ones) or into the reply (small ones). Use
    /// `tensor_view::owning(t)` for a tensor the handler built, or set `owner` to keep other
    /// memory alive until the reply is written.
    std::vector<tensor_view> tensors;
};

using handler = std::function<result(const call&)>;

/// What a worker process learns from the pool when it starts.
struct start_info {
    /// The worker's slot in the pool, 0 .. workers-1, stable across restarts (e.g. to pick a
    /// GPU).
    std::size_t slot = 0;
    /// Threads the pool wants each worker's LibTorch intra-op and inter-op pools to use (see
    /// pool_params::intra_op_threads); 0 when not started by a pool that says.
    unsigned intra_op_threads = 0;
    unsigned inter_op_threads = 0;
    /// True in a worker made by the fork server (the hook runs after the fork).
    bool forked = false;
};

using start_hook = std::function<void(const start_info&)>;

class server {
public:
    /// Uses the channel the pool passed (environment variable TORCHPOOL_CHANNEL_FD, fd 3).
    server();
    /// Uses `channel_fd`, e.g. one end of a socketpair in a test.
    explicit server(int channel_fd);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Registers `h` for requests whose method is `method`, replacing any earlier one.
    void handle(std::string method, handler h);

    /// Runs `hook` in every worker process before it says hello: the place to set thread
    /// counts, pick a device and warm up, since the pool counts a worker as ready only
    /// after it. In fork-server mode it runs in each worker after the fork, never in the
    /// server. If it throws, the worker writes the reason to stderr and exits with code 3;
    /// the pool reports a failed start with that message.
    void on_start(start_hook hook);

    /// Says hello, then serves requests one at a time until the pool sends shutdown or
    /// closes the channel. Returns the process exit code to use: 0 after a normal end, 2 if
    /// the channel is unusable or the pool sent something this worker cannot read, 3 if
    /// the start hook failed (the reason is written to stderr).
    ///
    /// Started by a pool in fork-server mode (pool_params::worker::start), this process is
    /// the fork server instead: everything done before serve() (libraries, a model) is
    /// shared by every worker, which the server makes by forking itself; serve() returns
    /// in the server when the pool is done with it, and runs as a worker in each fork,
    /// where it does not return: the worker ends with _exit (after flushing stdio), since
    /// exit handlers registered in the server are not safe to run in a fork.
    /// Start no threads before serve() in such a program.
    int serve();

private:
    int serve_worker(const start_info& info);

    struct state;
    std::unique_ptr<state> state_;
};

}  // namespace torchpool::worker
