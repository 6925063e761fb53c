// The Asio driver of the pool: maps the core's actions to system calls and turns I/O
// completions into the core's events. Everything here runs on the pool's executor.
#include "core/pool_core.hpp"
#include "posix/process.hpp"
#include "wire/codec.hpp"
#include "wire/frame_reader.hpp"
#include <torchpool/pool.hpp>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <atomic>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace torchpool::detail {

namespace asio = boost::asio;
using boost::system::error_code;

// The cores this process may run on (its affinity mask), as the workers will inherit it.
inline std::size_t usable_cores() {
    cpu_set_t set;
    if (::sched_getaffinity(0, sizeof set, &set) == 0) {
        return std::max(1, CPU_COUNT(&set));
    }
    return std::max(1u, std::thread::hardware_concurrency());
}

using run_handler = asio::any_completion_handler<void(error_code)>;
using submit_handler = asio::any_completion_handler<void(error_code, response)>;

class pool_impl : public std::enable_shared_from_this<pool_impl> {
public:
    pool_impl(asio::any_io_executor ex, const pool_params& params)
        : executor_(std::move(ex)),
          params_(params),
          core_(params),
          launcher_(params.worker, worker_environment(params),
                    params.worker.start == start_mode::fork_server ? SOCK_SEQPACKET : SOCK_STREAM),
          server_(executor_),
          timer_(executor_) {
        workers_.reserve(params.workers);
        for (std::size_t i = 0; i < params.workers; ++i) {
            workers_.push_back(std::make_unique<worker_io>(executor_, params.max_frame_bytes));
        }
    }

    ~pool_impl() {
        // Normally every child has been reaped by now. If the execution context went away
        // first, do not leave processes or zombies behind.
        for (auto& w : workers_) {
            if (w->alive) {
                posix::send_signal(w->pidfd.native_handle(), SIGKILL);
                posix::reap_blocking(w->pidfd.native_handle());
            }
        }
        if (server_.alive) {
            posix::send_signal(server_.pidfd.native_handle(), SIGKILL);
            posix::reap_blocking(server_.pidfd.native_handle());
        }
        for (auto& p : side_processes_) {
            posix::send_signal(p->pidfd.native_handle(), SIGKILL);
            posix::reap_blocking(p->pidfd.native_handle());
        }
    }

    // What every worker (or the fork server) finds in its environment, besides the user's.
    static std::vector<std::string> worker_environment(const pool_params& params) {
        const std::string intra = std::to_string(params.intra_op_threads);
        std::vector<std::string> env = {
            "TORCHPOOL_INTRA_OP_THREADS=" + intra,
            "TORCHPOOL_INTER_OP_THREADS=" + std::to_string(params.inter_op_threads),
            // Read by OpenMP and MKL when they load, before any code of the worker runs.
            "OMP_NUM_THREADS=" + intra, "MKL_NUM_THREADS=" + intra};
        if (params.worker.start == start_mode::fork_server) {
            env.push_back("TORCHPOOL_FORK_SERVER=1");
            // Forking a process as large as LibTorch takes milliseconds: the server gets a
            // helper per further core, so that a burst of starts uses every core.
            env.push_back("TORCHPOOL_FORK_SERVER_HELPERS=" + std::to_string(usable_cores() - 1));
        }
        return env;
    }

    void run(run_handler handler) {
        on_pool_executor([self = shared_from_this(), h = std::move(handler)]() mutable {
            self->do_run(std::move(h));
        });
    }

    void submit(submit_handler&& handler, request&& req) {
        const core::task_id id = next_task_id_.fetch_add(1, std::memory_order_relaxed);
        // The slot is connected here, in the caller's context, so that a cancellation
        // emitted right after this call is not lost; the cancel is posted, so it reaches the
        // pool after the task.
        auto cancel_slot = asio::get_associated_cancellation_slot(handler);
        if (cancel_slot.is_connected()) {
            cancel_slot.assign(
                [weak = weak_from_this(), ex = executor_, id](asio::cancellation_type type) {
                    asio::post(ex, [weak, id, type] {
                        if (auto self = weak.lock()) {
                            self->core_.cancel_task(id, type, core::clock::now());
                            self->drive();
                        }
                    });
                });
        }
        if (running_on_pool_executor()) {
            // As on_pool_executor, without moving the request into a function object.
            as_initiation([&] { do_submit(id, std::move(handler), std::move(req)); });
            return;
        }
        asio::post(executor_, [self = shared_from_this(), id, h = std::move(handler),
                               req = std::move(req)]() mutable {
            self->do_submit(id, std::move(h), std::move(req));
        });
    }

    void shutdown(run_handler handler) {
        on_pool_executor([self = shared_from_this(), h = std::move(handler)]() mutable {
            self->do_shutdown(std::move(h));
        });
    }

    void cancel() {
        on_pool_executor([self = shared_from_this()] {
            self->core_.stop(core::clock::now());
            self->drive();
        });
    }

    pool_stats stats() const { return core_.stats(); }

private:
    using shared_frame = std::shared_ptr<const wire::frame>;

    static shared_frame share(wire::frame f) {
        return std::make_shared<const wire::frame>(std::move(f));
    }

    // What the pool holds of any child it supervises, worker or fork server: its pidfd and
    // its stdout+stderr pipe, and the exit status while reads in flight finish.
    struct process_io {
        explicit process_io(const asio::any_io_executor& ex) : pidfd(ex), log(ex) {}

        // A new process in this place.
        void take(posix::spawned_process& p) {
            ++generation;
            alive = true;
            exit.reset();
            pidfd.assign(p.pidfd.release());
            log.assign(p.log.release());
        }

        // The process is gone: its completions still queued find another generation.
        void retire() {
            exit.reset();
            alive = false;
            ++generation;
            error_code ignored;
            log.close(ignored);
            pidfd.close(ignored);
        }

        std::uint64_t generation = 0;  // one per process; stale completions compare it
        bool alive = false;
        asio::posix::stream_descriptor pidfd;
        asio::posix::stream_descriptor log;
        bool log_reading = false;
        std::optional<core::exit_status> exit;  // reaped, waiting for reads in flight
        std::array<char, 4096> log_buffer;
    };

    struct worker_io : process_io {
        worker_io(const asio::any_io_executor& ex, std::size_t max_frame_bytes)
            : process_io(ex), channel(ex), reader(max_frame_bytes) {}

        asio::local::stream_protocol::socket channel;
        wire::frame_reader reader;
        bool channel_open = false;
        bool channel_reading = false;
        std::deque<shared_frame> outbox;
        std::size_t front_offset = 0;            // bytes of the first frame already written
        std::vector<asio::const_buffer> gather;  // the outbox frames being written
        bool writing = false;
    };

    struct pending_task {
        submit_handler handler;
        shared_frame request_frame;
    };

    // Runs `f` now if the caller is already on the pool's executor (a plain io_context
    // executor; a strand's ownership cannot be asked), else posts it there. Running it now
    // saves a trip through the scheduler per task and keeps operations in call order;
    // anything that would complete inside the call is posted instead (complete_handler).
    bool running_on_pool_executor() const noexcept {
        const auto* ex = executor_.target<asio::io_context::executor_type>();
        return ex && ex->running_in_this_thread();
    }

    // Runs `f` now, marked as part of a public operation's own call.
    template <class F>
    void as_initiation(F&& f) {
        const bool outer = std::exchange(initiating_, true);
        f();
        initiating_ = outer;
    }

    template <class F>
    void on_pool_executor(F&& f) {
        if (running_on_pool_executor()) {
            as_initiation(f);
        } else {
            asio::post(executor_, std::forward<F>(f));
        }
    }

    // True if `ex` is (an any_io_executor holding) the pool's io_context executor, and this
    // thread is running that io_context.
    template <class Executor>
    bool is_pool_executor_here(const Executor& ex) const noexcept {
        if (!running_on_pool_executor()) {
            return false;
        }
        const auto* pool_ex = executor_.target<asio::io_context::executor_type>();
        const auto* io_ex = ex.template target<asio::io_context::executor_type>();
        if (!io_ex) {
            if (const auto* any = ex.template target<asio::any_io_executor>()) {
                io_ex = any->template target<asio::io_context::executor_type>();
            }
        }
        return io_ex && *io_ex == *pool_ex;
    }

    template <class T>
    static T&& unwrap(T&& value) {
        return std::forward<T>(value);
    }
    static response&& unwrap(std::shared_ptr<response>&& result) { return std::move(*result); }

    // Runs a completion on the handler's own executor, tracking work there until then.
    // A response travels as a shared_ptr until the handler is called.
    template <class Handler, class... Args>
    void complete_handler(Handler handler, Args&&... args) {
        auto slot = asio::get_associated_cancellation_slot(handler);
        if (slot.is_connected()) {
            slot.clear();
        }
        const auto associated = asio::get_associated_executor(handler, executor_);
        if (!initiating_ && is_pool_executor_here(associated)) {
            // What dispatch would do, without its type-erased detour: the handler's executor
            // is the pool's own io_context, and we are running on it.
            std::move(handler)(unwrap(std::forward<Args>(args))...);
            return;
        }
        auto ex = asio::prefer(associated, asio::execution::outstanding_work.tracked);
        auto call = [h = std::move(handler), ... a = std::forward<Args>(args)]() mutable {
            std::move(h)(unwrap(std::move(a))...);
        };
        if (initiating_) {
            // Never complete inside the initiating call: go round the pool's executor first.
            asio::post(executor_, [ex, call = std::move(call)]() mutable {
                asio::dispatch(ex, std::move(call));
            });
        } else {
            asio::dispatch(ex, std::move(call));
        }
    }

    void do_run(run_handler handler) {
        if (run_called_) {
            complete_handler(std::move(handler), error_code(asio::error::already_started));
            return;
        }
        run_called_ = true;
        if (!core_.start(core::clock::now())) {
            // Shut down or cancelled before it was ever run: nothing to supervise.
            complete_handler(std::move(handler), error_code());
            return;
        }
        run_handler_.emplace(std::move(handler));
        auto slot = asio::get_associated_cancellation_slot(*run_handler_);
        if (slot.is_connected()) {
            slot.assign([weak = weak_from_this(), ex = executor_](asio::cancellation_type) {
                asio::post(ex, [weak] {
                    if (auto self = weak.lock()) {
                        self->core_.stop(core::clock::now());
                        self->drive();
                    }
                });
            });
        }
        drive();
    }

    void do_shutdown(run_handler handler) {
        if (core_.finished()) {
            complete_handler(std::move(handler), error_code());
            return;
        }
        shutdown_handlers_.push_back(std::move(handler));
        core_.shutdown(core::clock::now());
        drive();
    }

    void do_submit(core::task_id id, submit_handler&& handler, request&& req) {
        const auto now = core::clock::now();
        std::string invalid;
        if (req.method.empty()) {
            invalid =
                "The request has no method name; set request::method to the name of a "
                "handler the worker registered.";
        }
        for (std::size_t i = 0; invalid.empty() && i < req.tensors.size(); ++i) {
            if (auto problem = wire::validate_tensor(req.tensors[i]); !problem.empty()) {
                invalid = "Tensor " + std::to_string(i) + " of the request " + problem + ".";
            }
        }
        if (!invalid.empty()) {
            pending_.emplace(id, pending_task{std::move(handler), nullptr});
            core_.reject(id, errc::invalid_request, std::move(invalid));
            drive();
            return;
        }
        const auto timeout = core_.timeout_for(req.timeout);
        // steady_clock is CLOCK_MONOTONIC on Linux, the clock the worker compares with.
        const std::uint64_t deadline_ns =
            timeout.count() > 0
                ? static_cast<std::uint64_t>(
                      std::chrono::nanoseconds((now + timeout).time_since_epoch()).count())
                : 0;
        pending_.emplace(id, pending_task{std::move(handler),
                                          share(wire::encode_request(id, deadline_ns, req))});
        core_.submit(id, std::move(req.method), timeout, now);
        drive();
    }

    // Carries out every action the core has decided, then re-arms the timer.
    void drive() {
        auto& actions = core_.actions();
        while (!actions.empty()) {
            core::action next = std::move(actions.front());
            actions.pop_front();
            std::visit([this](auto& a) { execute(a); }, next);
        }
        arm_timer();
    }

    void execute(core::spawn_action& a) {
        auto started = launcher_.spawn(a.slot);
        if (auto* why = std::get_if<std::string>(&started)) {
            core_.on_spawn_error(a.slot, std::move(*why), core::clock::now());
            return;
        }
        adopt(a.slot, std::get<posix::spawned_process>(started));
    }

    // Takes over a new worker process for `slot`, however it was made.
    void adopt(core::slot_id slot, posix::spawned_process& p) {
        const auto now = core::clock::now();
        auto& w = *workers_[slot];
        const core::slot_id s = slot;
        w.take(p);
        w.channel.assign(asio::local::stream_protocol(), p.channel.release());
        w.channel_open = true;
        w.reader = wire::frame_reader(params_.max_frame_bytes);
        w.outbox.clear();
        w.front_offset = 0;
        w.writing = false;
        core_.on_spawned(s, p.pid, now);
        watch_exit(w, [this, s] {
            // A channel wait may have completed with data whose handler has not run yet: let
            // it run first (cancelled), then drain what is left, so that a reply sent just
            // before the exit still counts.
            auto& io = *workers_[s];
            if (io.channel_reading) {
                error_code ignored;
                io.channel.cancel(ignored);
            }
            finish_exit_when_read(s);
        });
        read_channel(s);
        read_output(
            w, [this, s](std::string_view bytes) { core_.on_log(s, bytes); },
            [this, s] { finish_exit_when_read(s); });
    }

    // Waits for the process to exit and reaps it (a spurious wake-up waits again); then, with
    // `io.exit` set and the output read in flight cancelled, `exited()`.
    template <class Exited>
    void watch_exit(process_io& io, Exited exited) {
        io.pidfd.async_wait(
            asio::posix::descriptor_base::wait_read,
            [self = shared_from_this(), &io, gen = io.generation, exited](error_code ec) mutable {
                if (ec || io.generation != gen || !io.alive) {
                    return;
                }
                auto status = posix::try_reap(io.pidfd.native_handle());
                if (!status) {
                    self->watch_exit(io, std::move(exited));
                    return;
                }
                // A log read may hold bytes whose handler has not run: it
                // runs first (cancelled), the rest is drained after it.
                io.exit = *status;
                if (io.log_reading) {
                    error_code ignored;
                    io.log.cancel(ignored);
                }
                exited();
                self->drive();
            });
    }

    // Reads the process's stdout+stderr into `sink` until the pipe ends or the process has
    // exited; after each read, `after()` (which completes an exit once nothing is in flight).
    template <class Sink, class After>
    void read_output(process_io& io, Sink sink, After after) {
        io.log_reading = true;
        io.log.async_read_some(asio::buffer(io.log_buffer),
                               [self = shared_from_this(), &io, gen = io.generation, sink, after](
                                   error_code ec, std::size_t n) mutable {
                                   if (io.generation != gen) {
                                       return;
                                   }
                                   io.log_reading = false;
                                   if (n > 0) {
                                       sink(std::string_view(io.log_buffer.data(), n));
                                   }
                                   if (!ec && !io.exit) {
                                       self->read_output(io, std::move(sink), std::move(after));
                                   } else if (ec && ec != asio::error::operation_aborted) {
                                       error_code ignored;
                                       io.log.close(ignored);  // end of its output
                                   }
                                   after();
                                   self->drive();
                               });
    }

    // At exit only, with no read in flight: what the output pipe still holds, without
    // blocking.
    template <class Sink>
    static void drain_output(process_io& io, Sink&& sink) {
        if (!io.log.is_open()) {
            return;
        }
        for (;;) {
            const ssize_t n =
                ::read(io.log.native_handle(), io.log_buffer.data(), io.log_buffer.size());
            if (n > 0) {
                sink(std::string_view(io.log_buffer.data(), static_cast<std::size_t>(n)));
            } else if (n == 0 || errno != EINTR) {
                return;
            }
        }
    }

    // --- the fork server -----------------------------------------------------------------

    struct server_io : process_io {
        explicit server_io(const asio::any_io_executor& ex) : process_io(ex), control(ex) {}
        asio::posix::stream_descriptor control;  // SOCK_SEQPACKET: one message per packet
        bool control_reading = false;
        // Until end of stream: every holder of the server's end has closed it, the server
        // and any worker it made that has not yet handed itself over.
        bool control_open = false;
    };

    void execute(core::start_server_action&) {
        auto started = launcher_.spawn(0);
        if (auto* why = std::get_if<std::string>(&started)) {
            core_.on_server_spawn_error(std::move(*why), core::clock::now());
            return;
        }
        auto& p = std::get<posix::spawned_process>(started);
        server_.take(p);
        server_.control.assign(p.channel.release());
        server_.control_open = true;
        fork_requests_.clear();
        core_.on_server_spawned(p.pid, core::clock::now());
        // The control socket is read on to its end, even after the exit: a worker made just
        // before the exit still hands itself over.
        watch_exit(server_, [this] { finish_server_exit_when_read(); });
        read_server_control();
        read_output(
            server_, [this](std::string_view bytes) { core_.on_server_log(bytes); },
            [this] { finish_server_exit_when_read(); });
    }

    void execute(core::stop_server_action& a) {
        if (!server_.alive) {
            return;
        }
        if (a.kill) {
            posix::send_signal(server_.pidfd.native_handle(), SIGKILL);
        } else {
            // End of its control stream: the server's loop returns and it exits.
            ::shutdown(server_.control.native_handle(), SHUT_WR);
        }
    }

    void execute(core::fork_action& a) {
        const std::uint64_t sequence = ++fork_sequence_;
        const auto packet =
            wire::encode(wire::fork_request_msg{sequence, static_cast<std::uint32_t>(a.slot)});
        const auto bytes = packet.asBytes();
        ssize_t n;
        do {
            n = server_.alive ? ::send(server_.control.native_handle(), bytes.begin(), bytes.size(),
                                       MSG_NOSIGNAL | MSG_DONTWAIT)
                              : -1;
        } while (n < 0 && errno == EINTR);
        if (n != static_cast<ssize_t>(bytes.size())) {
            // Gone or not keeping up (a full socket buffer holds hundreds of requests): the
            // slot retries after its backoff.
            core_.on_spawn_error(a.slot,
                                 std::string("cannot ask the fork server for a worker: ") +
                                     (server_.alive ? std::strerror(errno) : "it is not running"),
                                 core::clock::now());
            return;
        }
        fork_requests_[sequence] = a.slot;
    }

    // As for workers: the exit is told only when no read is in flight, after what the
    // pipes still hold, and once the control socket has ended, so that every worker the
    // server made has handed itself over.
    void finish_server_exit_when_read() {
        auto& io = server_;
        if (!io.exit || io.control_open || io.control_reading || io.log_reading ||
            helpers_running()) {
            return;
        }
        drain_output(io, [this](std::string_view bytes) { core_.on_server_log(bytes); });
        const auto status = *io.exit;
        io.retire();
        error_code ignored;
        io.control.close(ignored);
        fork_requests_.clear();
        core_.on_server_exit(status, core::clock::now());
    }

    void read_server_control() {
        server_.control_reading = true;
        server_.control.async_wait(
            asio::posix::descriptor_base::wait_read,
            [self = shared_from_this(), gen = server_.generation](error_code ec) {
                auto& io = self->server_;
                if (io.generation != gen) {
                    return;
                }
                io.control_reading = false;
                if (!ec && self->take_server_packets()) {
                    self->read_server_control();  // on to the end, even after the exit
                } else {
                    io.control_open = false;
                }
                self->finish_server_exit_when_read();
                self->drive();
            });
    }

    // Reads every packet the control socket holds. False at end of stream or after an error
    // (the server's exit follows, or it has been killed).
    bool take_server_packets() {
        auto& io = server_;
        if (!io.control.is_open()) {
            return false;
        }
        for (;;) {
            alignas(capnp::word) std::array<char, 4096> buffer;
            alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * 8)> control;
            iovec iov{buffer.data(), buffer.size()};
            msghdr msg{};
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.data();
            msg.msg_controllen = control.size();
            const ssize_t n =
                ::recvmsg(io.control.native_handle(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
            if (n < 0 && (errno == EINTR || errno == ECONNRESET)) {
                // ECONNRESET: the server died with requests unread. It is reported once, and
                // what workers it made sent is still queued behind it: read on.
                continue;
            }
            if (n < 0) {
                return errno == EAGAIN || errno == EWOULDBLOCK;
            }
            std::vector<posix::unique_fd> fds;
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                    for (std::size_t i = 0; i < count; ++i) {
                        int fd;
                        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                        fds.emplace_back(fd);
                    }
                }
            }
            if (n == 0) {
                return false;
            }
            const auto now = core::clock::now();
            if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 || n % 8 != 0) {
                core_.on_server_protocol_error(
                    "sent a message that is not a whole Cap'n Proto frame", now);
                return false;
            }
            auto decoded = wire::decode(
                std::span<const capnp::word>(reinterpret_cast<const capnp::word*>(buffer.data()),
                                             static_cast<std::size_t>(n) / 8));
            if (auto* bad = std::get_if<wire::decode_error>(&decoded)) {
                core_.on_server_protocol_error("sent a malformed message: " + bad->what, now);
                return false;
            }
            auto& m = std::get<wire::message>(decoded);
            auto* reply = std::get_if<wire::fork_reply_msg>(&m);
            if (auto* hello = std::get_if<wire::hello_msg>(&m)) {
                core_.on_server_hello(*hello, now);
            } else if (reply && reply->helper && fds.size() == 1) {
                adopt_side_process(reply->pid, std::move(fds[0]), true);
            } else if (reply) {
                on_fork_reply(*reply, fds);
            } else {
                core_.on_server_protocol_error(
                    std::string("sent a ") + wire::message_name(m) + " message", now);
                return false;
            }
        }
    }

    void on_fork_reply(const wire::fork_reply_msg& reply, std::vector<posix::unique_fd>& fds) {
        const auto now = core::clock::now();
        auto it = fork_requests_.find(reply.sequence);
        const bool wanted = it != fork_requests_.end() && core_.awaiting_fork(it->second);
        if (fds.size() == 3 && !wanted) {
            // Asked for by a slot that stopped in the meantime: not ours to keep.
            adopt_orphan(std::move(fds[0]));
        }
        if (it == fork_requests_.end()) {
            return;
        }
        const core::slot_id slot = it->second;
        fork_requests_.erase(it);
        if (!wanted) {
            return;
        }
        if (!reply.error.empty()) {
            core_.on_spawn_error(slot, "the fork server could not make a worker: " + reply.error,
                                 now);
            return;
        }
        if (fds.size() != 3 || reply.pid <= 0) {
            if (!fds.empty()) {
                adopt_orphan(std::move(fds[0]));
            }
            core_.on_server_protocol_error(
                "handed over a worker without its pidfd, channel and log "
                "pipe (" +
                    std::to_string(fds.size()) + " descriptors)",
                now);
            return;
        }
        if (!posix::set_nonblocking(fds[1].get()) || !posix::set_nonblocking(fds[2].get())) {
            adopt_orphan(std::move(fds[0]));
            core_.on_spawn_error(slot, "cannot make a forked worker's descriptors non-blocking",
                                 now);
            return;
        }
        posix::spawned_process p{reply.pid, std::move(fds[0]), std::move(fds[1]),
                                 std::move(fds[2])};
        adopt(slot, p);
    }

    // Processes of ours that are neither workers nor the fork server: the server's helpers
    // (they end with the server or the control socket), and forks nobody wants (killed at
    // once). Each is reaped here when it exits.
    struct side_process {
        side_process(const asio::any_io_executor& ex, int pid_, int fd, bool helper_)
            : pid(pid_), helper(helper_), pidfd(ex, fd) {}
        int pid;
        bool helper;
        asio::posix::stream_descriptor pidfd;
    };

    void adopt_side_process(int pid, posix::unique_fd pidfd, bool helper) {
        if (!helper) {
            posix::send_signal(pidfd.get(), SIGKILL);
        }
        side_processes_.push_back(
            std::make_unique<side_process>(executor_, pid, pidfd.release(), helper));
        reap_when_exited(side_processes_.back().get());
    }

    // A fork that was asked for by a slot that stopped in the meantime: not ours to keep.
    void adopt_orphan(posix::unique_fd pidfd) { adopt_side_process(0, std::move(pidfd), false); }

    bool helpers_running() const {
        return std::any_of(side_processes_.begin(), side_processes_.end(),
                           [](const auto& p) { return p->helper; });
    }

    void reap_when_exited(side_process* p) {
        p->pidfd.async_wait(
            asio::posix::descriptor_base::wait_read, [self = shared_from_this(), p](error_code ec) {
                if (ec) {
                    return;
                }
                const auto status = posix::try_reap(p->pidfd.native_handle());
                if (!status) {
                    self->reap_when_exited(p);  // a spurious wake-up
                    return;
                }
                const int pid = p->pid;
                const bool helper = p->helper;
                std::erase_if(self->side_processes_, [&](const auto& o) { return o.get() == p; });
                if (!helper) {
                    return;
                }
                // A helper that ends alone took the requests it was working on with it: the
                // server is replaced, which asks for those workers again.
                auto& io = self->server_;
                if (io.alive && !io.exit && io.control_open &&
                    !posix::has_exited(io.pidfd.native_handle())) {
                    self->core_.on_server_protocol_error("lost its helper process " +
                                                             std::to_string(pid) + ", which " +
                                                             core::describe_exit(*status),
                                                         core::clock::now());
                }
                self->finish_server_exit_when_read();
                self->drive();
            });
    }

    void execute(core::send_request_action& a) {
        auto it = pending_.find(a.task);
        if (it == pending_.end() || !workers_[a.slot]->alive) {
            return;
        }
        // Shared, not moved: a prefetched task whose worker dies is sent again elsewhere.
        send(a.slot, it->second.request_frame);
    }

    void execute(core::send_shutdown_action& a) {
        if (workers_[a.slot]->alive) {
            send(a.slot, share(wire::encode(wire::shutdown_msg{})));
        }
    }

    void execute(core::send_cancel_action& a) {
        if (workers_[a.slot]->alive) {
            send(a.slot, share(wire::encode(wire::cancel_msg{a.task})));
        }
    }

    void execute(core::signal_action& a) {
        auto& w = *workers_[a.slot];
        if (w.alive) {
            posix::send_signal(w.pidfd.native_handle(), a.signo);
        }
    }

    void execute(core::complete_action& a) {
        auto it = pending_.find(a.task);
        if (it == pending_.end()) {
            return;
        }
        auto handler = std::move(it->second.handler);
        pending_.erase(it);
        complete_handler(std::move(handler), a.error, std::move(a.result));
    }

    void execute(core::run_finished_action&) {
        timer_.cancel();
        if (run_handler_) {
            run_handler h(std::move(*run_handler_));
            run_handler_.reset();
            complete_handler(std::move(h), error_code());
        }
        for (auto& h : shutdown_handlers_) {
            complete_handler(std::move(h), error_code());
        }
        shutdown_handlers_.clear();
    }

    void execute(core::notify_action& a) {
        if (params_.on_worker_event) {
            params_.on_worker_event(a.event);
        }
    }

    void send(core::slot_id s, shared_frame frame) {
        workers_[s]->outbox.push_back(std::move(frame));
        start_write(s);
    }

    void start_write(core::slot_id s) {
        auto& w = *workers_[s];
        if (w.writing || w.outbox.empty() || !w.channel_open) {
            return;
        }
        // Everything queued for this worker goes out in one gathered write; first tried
        // directly, since the socket buffer almost always has room, which saves an
        // asynchronous operation per task.
        gather_outbox(w);
        std::array<iovec, 64> iov;
        const std::size_t count = std::min(iov.size(), w.gather.size());
        for (std::size_t i = 0; i < count; ++i) {
            iov[i] = {const_cast<void*>(w.gather[i].data()), w.gather[i].size()};
        }
        msghdr msg{};
        msg.msg_iov = iov.data();
        msg.msg_iovlen = count;
        ssize_t sent;
        do {
            sent = ::sendmsg(w.channel.native_handle(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        } while (sent < 0 && errno == EINTR);
        if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            w.outbox.clear();  // the worker closed its end; its exit will tell the story
            w.front_offset = 0;
            return;
        }
        consume_outbox(w, sent < 0 ? 0 : static_cast<std::size_t>(sent));
        if (w.outbox.empty()) {
            return;
        }
        w.writing = true;
        gather_outbox(w);
        asio::async_write(
            w.channel, w.gather,
            [self = shared_from_this(), s, gen = w.generation](error_code ec, std::size_t n) {
                auto& io = *self->workers_[s];
                if (io.generation != gen || !io.alive) {
                    return;
                }
                io.writing = false;
                if (ec) {
                    io.outbox.clear();
                    io.front_offset = 0;
                    return;
                }
                consume_outbox(io, n);
                self->start_write(s);
            });
    }

    // The unwritten bytes of the outbox, as one buffer sequence in w.gather.
    static void gather_outbox(worker_io& w) {
        w.gather.clear();
        std::size_t offset = w.front_offset;
        for (const auto& frame : w.outbox) {
            auto bytes = frame->asBytes();
            w.gather.emplace_back(bytes.begin() + offset, bytes.size() - offset);
            offset = 0;
        }
    }

    // Drops the first `n` bytes of the outbox, which have been written.
    static void consume_outbox(worker_io& w, std::size_t n) {
        while (n > 0 && !w.outbox.empty()) {
            const std::size_t left = w.outbox.front()->asBytes().size() - w.front_offset;
            if (n < left) {
                w.front_offset += n;
                return;
            }
            n -= left;
            w.outbox.pop_front();
            w.front_offset = 0;
        }
    }

    // Completes an exit once no read is in flight: takes what is left in the pipes, tells
    // the core, and closes the process's descriptors.
    void finish_exit_when_read(core::slot_id s) {
        auto& w = *workers_[s];
        if (!w.exit || w.channel_reading || w.log_reading) {
            return;
        }
        drain_output(w, [this, s](std::string_view bytes) { core_.on_log(s, bytes); });
        if (w.channel_open) {
            drain_channel(s);
        }
        const auto status = *w.exit;
        w.retire();
        error_code ignored;
        w.channel.close(ignored);
        w.channel_open = false;
        w.outbox.clear();
        w.writing = false;
        core_.on_exit(s, status, core::clock::now());
    }

    // Waits for the channel to be readable, then reads what it holds ourselves, so that no
    // bytes are ever held inside a pending asynchronous read (see adopt). Asio
    // re-arms the descriptor (EPOLL_CTL_MOD) for each wait, so data that arrives between our
    // last read and the wait is not missed, whichever thread runs the reactor.
    void read_channel(core::slot_id s) {
        auto& w = *workers_[s];
        w.channel_reading = true;
        w.channel.async_wait(asio::socket_base::wait_read,
                             [self = shared_from_this(), s, gen = w.generation](error_code ec) {
                                 auto& io = *self->workers_[s];
                                 if (io.generation != gen) {
                                     return;
                                 }
                                 const std::size_t n = ec ? 0 : read_available(io, ec);
                                 self->on_channel_read(s, ec, n);
                             });
    }

    // `n` bytes were added to the channel's reader (already committed), then `ec` happened.
    void on_channel_read(core::slot_id s, error_code ec, std::size_t n) {
        auto& w = *workers_[s];
        w.channel_reading = false;
        if (n > 0 && !take_messages(s)) {
            w.channel_open = false;
        }
        if (ec && ec != asio::error::operation_aborted) {
            channel_ended(s, ec);
        } else if (!ec && w.channel_open && !w.exit) {
            read_channel(s);
        }
        finish_exit_when_read(s);
        drive();
    }

    // Reads what the (non-blocking) channel holds into its frame reader, stopping at a short
    // read; `ec` becomes eof or the error that ended it. Returns the bytes read.
    static std::size_t read_available(worker_io& io, error_code& ec) {
        std::size_t total = 0;
        for (;;) {
            auto space = io.reader.prepare(64 * 1024);
            const ssize_t n = ::recv(io.channel.native_handle(), space.data(), space.size(), 0);
            if (n > 0) {
                io.reader.commit(static_cast<std::size_t>(n));
                total += static_cast<std::size_t>(n);
                if (static_cast<std::size_t>(n) < space.size()) {
                    return total;  // a short read: the socket is drained for now
                }
            } else if (n == 0) {
                ec = asio::error::eof;
                return total;
            } else if (errno != EINTR) {
                if (errno != EAGAIN && errno != EWOULDBLOCK) {
                    ec.assign(errno, boost::system::system_category());
                }
                return total;
            }
        }
    }

    // At exit only, with no read in flight: what the channel still holds.
    void drain_channel(core::slot_id s) {
        auto& w = *workers_[s];
        error_code ec;
        if (read_available(w, ec) > 0 && !take_messages(s)) {
            w.channel_open = false;
        }
        if (ec) {
            channel_ended(s, ec);
        }
    }

    void channel_ended(core::slot_id s, error_code ec) {
        auto& w = *workers_[s];
        if (!w.channel_open) {
            return;
        }
        w.channel_open = false;
        std::string what;
        if (ec == asio::error::eof) {
            what = w.reader.finish() ? "closed its channel in the middle of a message"
                                     : "closed its channel";
        } else if (ec == asio::error::would_block || ec == asio::error::try_again) {
            return;  // drained, still open; the process is gone anyway
        } else {
            what = "broke its channel (" + ec.message() + ")";
        }
        core_.on_channel_closed(s, std::move(what), core::clock::now());
    }

    // Returns false if the stream can no longer be trusted.
    bool take_messages(core::slot_id s) {
        auto& w = *workers_[s];
        for (;;) {
            auto next = w.reader.next();
            if (next.error) {
                const auto now = core::clock::now();
                if (next.error == errc::frame_too_large) {
                    core_.on_protocol_error(
                        s,
                        "sent a message of " + std::to_string(w.reader.rejected_frame_bytes()) +
                            " bytes, over the limit of " + std::to_string(params_.max_frame_bytes) +
                            " bytes (pool_params::max_frame_bytes)",
                        now);
                } else {
                    core_.on_protocol_error(
                        s, "sent bytes that are not a message (invalid segment table)", now);
                }
                return false;
            }
            if (!next.has_frame()) {
                return true;
            }
            auto decoded = wire::decode(next.words);
            if (auto* bad = std::get_if<wire::decode_error>(&decoded)) {
                core_.on_protocol_error(s, "sent a malformed message: " + bad->what,
                                        core::clock::now());
                return false;
            }
            core_.on_message(s, std::move(std::get<wire::message>(decoded)), core::clock::now());
        }
    }

    void arm_timer() {
        auto next = core_.next_deadline();
        if (!next || *next >= armed_for_) {
            return;  // an earlier wake-up is already set; a later one follows from it
        }
        armed_for_ = *next;
        timer_.expires_at(*next);
        timer_.async_wait([self = shared_from_this()](error_code ec) {
            if (ec == asio::error::operation_aborted) {
                return;  // re-armed for an earlier time, or stopped
            }
            self->armed_for_ = core::time_point::max();
            self->core_.on_timer(core::clock::now());
            self->drive();
        });
    }

    asio::any_io_executor executor_;
    pool_params params_;
    core::pool_core core_;
    posix::launcher launcher_;
    server_io server_;
    std::uint64_t fork_sequence_ = 0;
    std::unordered_map<std::uint64_t, core::slot_id> fork_requests_;  // sequence -> slot
    std::vector<std::unique_ptr<side_process>> side_processes_;
    asio::steady_timer timer_;
    core::time_point armed_for_ = core::time_point::max();
    std::vector<std::unique_ptr<worker_io>> workers_;
    std::unordered_map<core::task_id, pending_task> pending_;
    std::atomic<core::task_id> next_task_id_{1};  // the one member used off the executor
    bool run_called_ = false;
    bool initiating_ = false;  // inside a public operation's own call (on_pool_executor)
    // Optional rather than empty: Boost 1.81's any_completion_handler move assignment
    // recurses forever (it copies from an lvalue), so handlers are only move-constructed.
    std::optional<run_handler> run_handler_;
    std::vector<run_handler> shutdown_handlers_;
};

}  // namespace torchpool::detail

namespace torchpool {

namespace {

pool_params checked(pool_params params) {
    if (params.worker.executable.empty()) {
        throw std::invalid_argument(
            "torchpool::pool: pool_params::worker::executable is empty; set it to the path of "
            "a worker program");
    }
    if (params.workers == 0) {
        throw std::invalid_argument("torchpool::pool: pool_params::workers must be at least 1");
    }
    if (params.queue_limit == 0) {
        throw std::invalid_argument("torchpool::pool: pool_params::queue_limit must be at least 1");
    }
    if (params.max_frame_bytes < 1024) {
        throw std::invalid_argument(
            "torchpool::pool: pool_params::max_frame_bytes must be at least 1024");
    }
    const std::size_t cores = detail::usable_cores();
    const auto per_worker = static_cast<unsigned>(std::max<std::size_t>(1, cores / params.workers));
    if (params.intra_op_threads == 0) {
        params.intra_op_threads = per_worker;
    }
    if (params.inter_op_threads == 0) {
        params.inter_op_threads = per_worker;
    }
    if (params.max_concurrent_starts == 0) {
        params.max_concurrent_starts = std::max<std::size_t>(4, 2 * cores);
    }
    return params;
}

}  // namespace

pool::pool(executor_type ex, pool_params params)
    : executor_(ex),
      impl_(std::make_shared<detail::pool_impl>(std::move(ex), checked(std::move(params)))) {}

pool::~pool() {
    if (impl_) {
        impl_->cancel();
    }
}

void pool::cancel() {
    if (impl_) {
        impl_->cancel();
    }
}

pool_stats pool::stats() const {
    return impl_ ? impl_->stats() : pool_stats{};
}

void pool::async_run_impl(const std::shared_ptr<detail::pool_impl>& impl, run_handler handler) {
    impl->run(std::move(handler));
}

void pool::async_submit_impl(const std::shared_ptr<detail::pool_impl>& impl,
                             submit_handler&& handler, request&& req) {
    impl->submit(std::move(handler), std::move(req));
}

void pool::async_shutdown_impl(const std::shared_ptr<detail::pool_impl>& impl,
                               run_handler handler) {
    impl->shutdown(std::move(handler));
}

}  // namespace torchpool
