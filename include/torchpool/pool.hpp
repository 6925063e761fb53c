// torchpool::pool: a pool of worker processes supervised from one Asio executor.
#pragma once

#include <torchpool/error.hpp>
#include <torchpool/events.hpp>
#include <torchpool/health.hpp>
#include <torchpool/pool_params.hpp>
#include <torchpool/stats.hpp>
#include <torchpool/task.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/system/error_code.hpp>

#include <memory>
#include <utility>

namespace torchpool {

namespace detail {
class pool_impl;
}

/// A pool of worker processes, supervised from one executor.
///
/// The pool runs entirely on the executor it is given (the host's `io_context`, or a
/// strand of a multi-threaded one): it owns no thread, never blocks, installs no signal
/// handler and never calls `waitpid` on anything but its own children, through pidfds.
/// Workers are child processes started from `pool_params::worker`; each talks to the pool
/// over a Unix socket on fd 3 with Cap'n Proto messages, and dies with the host process
/// (even a SIGKILLed one), never because the host thread that started it ended.
///
/// Start it with `async_run`, submit work with `async_submit`, stop it with
/// `async_shutdown` (graceful) or `cancel` (immediate).
///
/// Thread safety: distinct objects: safe. Shared objects: `async_submit`, `async_run`,
/// `async_shutdown` and `cancel` may be called from any thread; the pool's executor must
/// not run its handlers concurrently (an `io_context` run by one thread, or a strand).
/// `stats` must be called from the pool's executor (or when it is not running); `health`
/// from anywhere.
class pool {
public:
    using executor_type = boost::asio::any_io_executor;

    /// Prepares the pool; starts nothing until `async_run`. Throws `std::invalid_argument`
    /// when `params` cannot work (no executable, zero workers, zero queue limit).
    pool(executor_type ex, pool_params params);

    pool(const pool&) = delete;
    pool& operator=(const pool&) = delete;
    /// Takes over `other`'s workers and operations; `other` is left empty (only assigning
    /// to it or destroying it is allowed).
    pool(pool&& other) noexcept = default;
    /// Stops this pool as the destructor does (`cancel()`), then takes over `other`'s.
    pool& operator=(pool&& other) noexcept;

    /// Calls `cancel()` and returns without waiting: outstanding operations keep the pool's
    /// state alive and still complete (with `operation_aborted`), and the workers are
    /// killed and reaped on the pool's executor. The pool's execution context must outlive
    /// the pool (destroy the pool first, as with any I/O object); if it does not, its
    /// destruction kills the workers and reaps them, waiting at most about 2 seconds.
    ~pool();

    executor_type get_executor() const noexcept { return executor_; }

    /// Starts the workers and supervises them until the pool is stopped.
    ///
    /// Completes once, after `async_shutdown` or `cancel()` has stopped the pool and every
    /// worker process has been reaped. Handler signature: `void(boost::system::error_code)`.
    /// Errors: none on a normal stop; `boost::asio::error::already_started` if called a
    /// second time (the first run is unaffected).
    /// Cancellation: terminal, partial and total all mean `cancel()`.
    template <class CompletionToken>
    auto async_run(CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
            initiation{impl_, executor_}, token, run_tag{});
    }

    /// Runs `req` on a worker and completes with its result.
    ///
    /// Tasks are dispatched in submission order to the first idle worker. May be called
    /// before `async_run`; the task then waits for the first workers. Never completes
    /// inline: the handler runs on its associated executor (by default the pool's).
    /// Handler signature: `void(boost::system::error_code, torchpool::response)`. On error
    /// `response::diagnostics` says exactly what happened (worker pid, exit code or
    /// signal name, core dump, peak memory, run times, the worker's last log lines).
    /// Errors: `errc::overloaded` (queue full, nothing ran; unless the request waits for
    /// room, `request::wait_when_full`), `errc::worker_died`, `errc::memory_limit`,
    /// `errc::timeout`, `errc::task_failed`, `errc::protocol_error`, `errc::poison_task`,
    /// `errc::spawn_failed` (pool degraded), `errc::shutting_down`, `errc::invalid_request`,
    /// `boost::asio::error::operation_aborted` (cancelled by the caller or by `cancel()`).
    /// An idempotent request (`request::with_retries`) runs again on another worker when
    /// its worker fails under it; `response::attempts` lists the runs.
    /// Tensors: the calling thread (where the operation is initiated) copies each tensor of
    /// `pool_params::shared_memory.inline_below` bytes or more from `tensor::data` into the
    /// pool's input memory, once; tensors from `allocate` are not copied at all; the pool's
    /// executor never touches tensor bytes. Large results come back in `tensor::shared`,
    /// read-only, held in the worker's output memory until the response's tensors are
    /// destroyed (read them with `tensor::bytes()`).
    /// Cancellation, by where the task is:
    /// - waiting for room, queued, or sent ahead to a busy worker (prefetch): terminal,
    ///   partial and total remove it; it completes at once with `operation_aborted`.
    /// - running: the worker is sent a cancel message, which its handler sees
    ///   (`worker::call::cancelled()`). Partial and total: the task completes when the
    ///   worker answers: `operation_aborted` if the handler stopped on it, else its result
    ///   (the cancellation came too late). Terminal: it completes at once with
    ///   `operation_aborted`; a worker that has not answered within
    ///   `pool_params::cancel_grace` is killed and replaced.
    template <class CompletionToken>
    auto async_submit(request req, CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken,
                                           void(boost::system::error_code, response)>(
            initiation{impl_, executor_}, token, std::move(req));
    }

    /// Stops the pool gracefully: new tasks are refused with `errc::shutting_down`, queued
    /// and running tasks finish, then each worker is asked to exit and gets SIGKILL if it
    /// has not after `pool_params::stop_grace`.
    ///
    /// Completes when every worker has been reaped (at the same time as `async_run`).
    /// Handler signature: `void(boost::system::error_code)`. Errors: none.
    /// Cancellation: not supported (use `cancel()` to stop at once).
    template <class CompletionToken>
    auto async_shutdown(CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
            initiation{impl_, executor_}, token, shutdown_tag{});
    }

    /// Waits for the next lifecycle event of the pool (the same events as
    /// `pool_params::on_worker_event`: workers started, ready, exited, restarts paced,
    /// degraded, memory kills, poison tasks, ...), for a host that consumes them as a stream
    /// with any completion token.
    ///
    /// Events are kept from the pool's construction in a buffer of `pool_params::event_buffer`;
    /// when the consumer falls behind, the oldest are dropped and the next event it gets is
    /// one of kind `events_dropped` saying how many (`pool_stats::events_dropped` counts
    /// them). Handler signature: `void(boost::system::error_code, torchpool::worker_event)`.
    /// Errors: `boost::asio::error::eof` once the pool has stopped and every event was
    /// delivered; `boost::asio::error::already_started` if another call is still waiting (one
    /// consumer at a time); `boost::asio::error::operation_not_supported` if event_buffer is 0;
    /// `operation_aborted` when cancelled. Cancellation: terminal, partial and total (no event
    /// is lost: it stays for the next call). Never completes inline.
    template <class CompletionToken>
    auto async_next_event(CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken,
                                           void(boost::system::error_code, worker_event)>(
            initiation{impl_, executor_}, token, event_tag{});
    }

    /// Stops the pool at once: every queued and running task completes with
    /// `operation_aborted`, every worker gets SIGKILL, and `async_run` completes once they
    /// are reaped. Does not wait. Idempotent.
    void cancel();

    /// A snapshot of the workers, the queue and the counters.
    pool_stats stats() const;

    /// A tensor of `type` and `shape` in the pool's input memory, to fill in place
    /// (`tensor::writable_bytes()`) and then submit: its bytes reach the worker with no copy
    /// anywhere. The memory goes back to the pool when the tensor and every copy of it (a
    /// request's, a retry's) are destroyed. Callable from any thread.
    /// Throws `boost::system::system_error`: `errc::shared_memory_full` when tensors that
    /// callers or running tasks hold fill the input memory now (`pool_stats` shows its use);
    /// `errc::invalid_request` for a negative dimension, a tensor larger than the whole input
    /// memory, or a pool without input memory (`shared_memory.input_bytes` is 0).
    tensor allocate(dtype type, std::vector<std::int64_t> shape);
    /// The same, with the error in `ec` and an empty tensor instead of an exception.
    tensor allocate(dtype type, std::vector<std::int64_t> shape, boost::system::error_code& ec);

    /// As `allocate`, but when the input memory is full, waits until tensors that callers or
    /// tasks hold are let go and there is room (in the order the waits began).
    ///
    /// Handler signature: `void(boost::system::error_code, torchpool::tensor)`. Errors:
    /// `errc::invalid_request` (as for `allocate`; at once); `errc::shutting_down` when the
    /// pool stops (its run completes) while waiting; `operation_aborted` when cancelled.
    /// Cancellation: terminal, partial and total stop the wait. Never completes inline.
    /// In a coroutine, build the shape first: GCC 12 rejects a braced list inside `co_await`
    /// (`co_await pool.async_allocate(t, {n}, ...)`, "array used as initializer").
    template <class CompletionToken>
    auto async_allocate(dtype type, std::vector<std::int64_t> shape, CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken,
                                           void(boost::system::error_code, tensor)>(
            initiation{impl_, executor_}, token, allocate_tag{type, std::move(shape)});
    }

    /// Changes the number of workers the pool keeps, now: starts more, or stops idle ones
    /// first and busy ones once their task is done (no task fails). The new size is the
    /// one the pool keeps from then on: it becomes `min_workers` (the pool still grows up
    /// to `max_workers` while tasks wait, and shrinks back to it). It is bounded by the
    /// slots made at construction, max(workers, max_workers) (descriptors are reserved for
    /// them). Does not wait; a `notice` event tells the size set. Callable from any thread.
    /// Does nothing once the pool is shutting down.
    void resize(std::size_t workers);

    /// Live, ready, degraded, from the state of the workers after the pool's last event.
    /// Callable from any thread, at any time (a readiness probe's handler on another
    /// executor, a signal-watching thread): it reads values the pool publishes, without
    /// touching the pool's state. An empty (moved-from) pool is not live.
    pool_health health() const;

private:
    struct run_tag {};
    struct shutdown_tag {};
    struct event_tag {};
    struct allocate_tag {
        dtype type;
        std::vector<std::int64_t> shape;
    };

    using run_handler = boost::asio::any_completion_handler<void(boost::system::error_code)>;
    using submit_handler =
        boost::asio::any_completion_handler<void(boost::system::error_code, response)>;
    using event_handler =
        boost::asio::any_completion_handler<void(boost::system::error_code, worker_event)>;
    using allocate_handler =
        boost::asio::any_completion_handler<void(boost::system::error_code, tensor)>;

    // Holds the state by shared_ptr, so a deferred operation stays valid even if the pool
    // object is moved or destroyed before the operation is launched.
    struct initiation {
        std::shared_ptr<detail::pool_impl> impl;
        executor_type executor;
        executor_type get_executor() const noexcept { return executor; }

        template <class Handler>
        void operator()(Handler&& handler, run_tag) const {
            async_run_impl(impl, run_handler(std::forward<Handler>(handler)));
        }
        template <class Handler>
        void operator()(Handler&& handler, request req) const {
            async_submit_impl(impl, submit_handler(std::forward<Handler>(handler)), std::move(req));
        }
        template <class Handler>
        void operator()(Handler&& handler, shutdown_tag) const {
            async_shutdown_impl(impl, run_handler(std::forward<Handler>(handler)));
        }
        template <class Handler>
        void operator()(Handler&& handler, event_tag) const {
            async_next_event_impl(impl, event_handler(std::forward<Handler>(handler)));
        }
        template <class Handler>
        void operator()(Handler&& handler, allocate_tag what) const {
            async_allocate_impl(impl, allocate_handler(std::forward<Handler>(handler)), what.type,
                                std::move(what.shape));
        }
    };

    static void async_run_impl(const std::shared_ptr<detail::pool_impl>& impl, run_handler handler);
    static void async_submit_impl(const std::shared_ptr<detail::pool_impl>& impl,
                                  submit_handler&& handler, request&& req);
    static void async_shutdown_impl(const std::shared_ptr<detail::pool_impl>& impl,
                                    run_handler handler);
    static void async_next_event_impl(const std::shared_ptr<detail::pool_impl>& impl,
                                      event_handler&& handler);
    static void async_allocate_impl(const std::shared_ptr<detail::pool_impl>& impl,
                                    allocate_handler&& handler, dtype type,
                                    std::vector<std::int64_t> shape);

    executor_type executor_;
    std::shared_ptr<detail::pool_impl> impl_;
};

}  // namespace torchpool
