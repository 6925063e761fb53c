#include "pool_impl.hpp"

#include "../posix/proc.hpp"
#include "../wire/codec.hpp"
#include "channel_intake.hpp"
#include "intake.hpp"
#include "params.hpp"
#include <torchpool/error.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <limits>
#include <stdexcept>

#include <signal.h>
#include <sys/socket.h>

namespace torchpool::detail {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

std::shared_ptr<shm::arena> make_input_memory(const shared_memory_params& params) {
    if (params.input_bytes == 0) {
        return nullptr;
    }
    auto made =
        shm::mapping::create("torchpool-inputs", params.input_bytes, shm::writers::creator_only);
    if (auto* why = std::get_if<std::string>(&made)) {
        throw std::runtime_error("torchpool: cannot make the pool's input memory of " +
                                 std::to_string(params.input_bytes) + " bytes (" + *why +
                                 "); set pool_params::shared_memory.input_bytes lower, or to 0 "
                                 "to send tensors inline");
    }
    return std::make_shared<shm::arena>(std::get<std::shared_ptr<shm::mapping>>(made));
}

}  // namespace

pool_impl::pool_impl(asio::any_io_executor ex, const pool_params& params)
    : fds_(descriptors_needed(params, usable_cores()),
           "a pool of " + std::to_string(params.workers) + " workers (3 descriptors each)"),
      memory_(params.memory, params.shared_memory.worker_output_bytes, core::slot_capacity(params)),
      inputs_(make_input_memory(params.shared_memory)),
      health_(params.workers, params.min_ready_workers),
      completion_(ex),
      params_(params),
      core_(params, {.memory = posix::read_memory,
                     .memory_exactly = posix::read_memory_exactly,
                     .activity = posix::read_activity,
                     .cpu_time = posix::read_cpu_time,
                     .available_memory = posix::available_memory,
                     .memory_pressure = posix::memory_pressure}),
      launcher_(params.worker, worker_environment(params, usable_cores()),
                params.worker.start == start_mode::fork_server ? SOCK_SEQPACKET : SOCK_STREAM,
                inputs_ ? inputs_->memory().fd() : -1),
      server_(ex),
      side_(ex, [this](int pid, const core::exit_status& status) { on_helper_end(pid, status); }),
      events_(params.event_buffer, completion_),
      timer_(ex) {
    workers_.reserve(core::slot_capacity(params));
    worker_lines_.resize(core::slot_capacity(params));
    outputs_.resize(core::slot_capacity(params));
    worker_link::events& sink = *this;
    for (std::size_t i = 0; i < core::slot_capacity(params); ++i) {
        workers_.push_back(std::make_unique<worker_link>(ex, i, params.max_frame_bytes, sink));
    }
}

pool_impl::~pool_impl() {
    if (inputs_) {
        inputs_->on_free(nullptr);  // nothing is posted here any more
    }
    // Callers may hold results past the pool: their memory stays, and nothing is posted here.
    for (auto& outputs : outputs_) {
        if (outputs) {
            outputs->orphan();
        }
    }
    // Normally every child has been reaped by now. If the execution context went away
    // first, do not leave processes or zombies behind, without waiting long for one that
    // will not go: all are killed at once, then reaped within one time limit.
    std::vector<int> pidfds;
    for (auto& w : workers_) {
        pidfds.push_back(w->pidfd_if_alive());
    }
    pidfds.push_back(server_.process().pidfd_if_alive());
    std::erase(pidfds, -1);
    side_.append_pidfds(pidfds);
    posix::kill_and_reap(pidfds, posix::teardown_limit);
}

// --- the public operations ---------------------------------------------------------------

void pool_impl::run(run_handler handler) {
    completion_.on_pool_executor([self = shared_from_this(), h = std::move(handler)]() mutable {
        self->do_run(std::move(h));
    });
}

void pool_impl::submit(submit_handler&& handler, request&& req) {
    const core::task_id id = next_task_id_.fetch_add(1, std::memory_order_relaxed);
    // The slot is connected here, in the caller's context, so that a cancellation emitted
    // right after this call is not lost; the cancel is posted, so it reaches the pool after
    // the task.
    auto cancel_slot = asio::get_associated_cancellation_slot(handler);
    if (cancel_slot.is_connected()) {
        cancel_slot.assign([weak = weak_from_this(), ex = completion_.executor(),
                            id](asio::cancellation_type type) {
            asio::post(ex, [weak, id, type] {
                if (auto self = weak.lock()) {
                    self->core_.cancel_task(id, type, core::clock::now());
                    self->drive();
                }
            });
        });
    }
    // Taken in here, on the caller's thread: the one copy of the tensors' bytes (into input
    // memory), their fingerprint and the frame's encoding never run on the pool's executor.
    const bool quarantining = quarantining_.load(std::memory_order_relaxed);
    taken in = take_in(
        id, req, core::clock::now(),
        {.default_timeout = params_.task_timeout,
         .fingerprint = core::pool_core::needs_fingerprint(params_, req.retries, quarantining),
         .faults_enabled = params_.faults.enabled,
         .inputs = inputs_.get(),
         .inline_below = params_.shared_memory.inline_below});
    if (const auto* ready = std::get_if<taken_request>(&in)) {
        tensors_inline_.fetch_add(ready->inline_tensors, std::memory_order_relaxed);
        tensors_shared_.fetch_add(ready->placed.size(), std::memory_order_relaxed);
        input_memory_full_.fetch_add(ready->found_memory_full, std::memory_order_relaxed);
    }
    if (completion_.running_on_pool_executor()) {
        // As on_pool_executor, without moving the request into a function object.
        completion_.as_initiation([&] {
            do_submit(id, std::move(handler), std::move(in), std::move(req.method), req.inject);
        });
        return;
    }
    asio::post(completion_.executor(),
               [self = shared_from_this(), id, h = std::move(handler), in = std::move(in),
                method = std::move(req.method), inject = req.inject]() mutable {
                   self->do_submit(id, std::move(h), std::move(in), std::move(method), inject);
               });
}

void pool_impl::shutdown(run_handler handler) {
    completion_.on_pool_executor([self = shared_from_this(), h = std::move(handler)]() mutable {
        self->do_shutdown(std::move(h));
    });
}

void pool_impl::cancel() {
    completion_.on_pool_executor([self = shared_from_this()] {
        self->core_.stop(core::clock::now());
        self->drive();
    });
}

void pool_impl::do_run(run_handler handler) {
    if (run_called_) {
        completion_.complete(std::move(handler), error_code(asio::error::already_started));
        return;
    }
    run_called_ = true;
    if (fds_.room().raised()) {
        core_.note("raised this process's soft limit on open files (RLIMIT_NOFILE) from " +
                   std::to_string(fds_.room().soft_before) + " to " +
                   std::to_string(fds_.room().soft_after) + " (its hard limit is " +
                   std::to_string(fds_.room().hard) + "), since " +
                   std::to_string(params_.workers) +
                   " workers hold 3 descriptors each in this process; the workers themselves "
                   "get the limit of " +
                   std::to_string(fds_.room().soft_before) + " back");
    }
    if (auto limits = memory_.describe(); !limits.empty()) {
        core_.note(std::move(limits));
    }
    if (!core_.start(core::clock::now())) {
        // Shut down or cancelled before it was ever run: nothing to supervise.
        completion_.complete(std::move(handler), error_code());
        return;
    }
    run_handler_.emplace(std::move(handler));
    auto slot = asio::get_associated_cancellation_slot(*run_handler_);
    if (slot.is_connected()) {
        slot.assign(
            [weak = weak_from_this(), ex = completion_.executor()](asio::cancellation_type) {
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

void pool_impl::do_shutdown(run_handler handler) {
    if (core_.finished()) {
        completion_.complete(std::move(handler), error_code());
        return;
    }
    shutdown_handlers_.push_back(std::move(handler));
    core_.shutdown(core::clock::now());
    drive();
}

void pool_impl::do_submit(core::task_id id, submit_handler&& handler, taken&& in,
                          std::string&& method, fault inject) {
    if (auto* invalid = std::get_if<std::string>(&in)) {
        pending_.emplace(id, pending_task{std::move(handler), nullptr, {}, {}});
        core_.reject(id, errc::invalid_request, std::move(*invalid));
        drive();
        return;
    }
    auto& ready = std::get<taken_request>(in);
    pending_.emplace(id, pending_task{std::move(handler), std::move(ready.frame), inject,
                                      std::move(ready.placed)});
    core_.submit(id, std::move(method), ready.options, core::clock::now());
    drive();
}

// --- the loop ----------------------------------------------------------------------------

void pool_impl::drive() {
    // Before the actions: a completion may resume its caller inline, who may submit again.
    quarantining_.store(core_.quarantining(), std::memory_order_relaxed);
    auto& actions = core_.actions();
    while (!actions.empty()) {
        core::action next = std::move(actions.front());
        actions.pop_front();
        std::visit([this](auto& a) { execute(a); }, next);
    }
    arm_timer();
    health_.post(core_.health());
}

void pool_impl::resize(std::size_t workers) {
    completion_.on_pool_executor([self = shared_from_this(), workers] {
        self->core_.resize(workers, core::clock::now());
        self->drive();
    });
}

inline void pool_impl::arm_timer() {
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

void pool_impl::execute(core::spawn_action& a) {
    auto started = launcher_.spawn(a.slot);
    if (auto* why = std::get_if<std::string>(&started)) {
        core_.on_spawn_error(a.slot, std::move(*why), core::clock::now());
        return;
    }
    adopt(a.slot, std::get<posix::spawned_process>(started));
}

inline void pool_impl::execute(core::send_request_action& a) {
    auto it = pending_.find(a.task);
    if (it == pending_.end() || !workers_[a.slot]->alive()) {
        return;
    }
    auto& w = *workers_[a.slot];
    if (params_.faults.enabled) {
        fault f = it->second.inject;
        if (params_.faults.choose) {
            if (const fault chosen =
                    params_.faults.choose({a.slot, w.pid(), core_.method_of(a.task), a.attempt})) {
                f = chosen;
            }
        }
        if (f) {
            w.send(share_frame(wire::encode(wire::fault_msg{a.task, f})));
        }
    }
    if (outputs_[a.slot]) {
        // Blocks its caller let go go back before the next task, which can then reuse them
        // (a caller that lets go and submits at once, on this executor, would else send the
        // task before the posted release).
        send_releases(a.slot, outputs_[a.slot]);
    }
    // Shared, not moved: a task sent ahead whose worker dies is sent again elsewhere.
    w.send(it->second.request_frame);
}

void pool_impl::execute(core::send_shutdown_action& a) {
    if (workers_[a.slot]->alive()) {
        workers_[a.slot]->send(share_frame(wire::encode(wire::shutdown_msg{})));
    }
}

void pool_impl::execute(core::send_cancel_action& a) {
    if (workers_[a.slot]->alive()) {
        workers_[a.slot]->send(share_frame(wire::encode(wire::cancel_msg{a.task})));
    }
}

void pool_impl::execute(core::send_heartbeat_action& a) {
    if (workers_[a.slot]->alive()) {
        workers_[a.slot]->send(share_frame(wire::encode(wire::heartbeat_msg{a.sequence})));
    }
}

void pool_impl::execute(core::signal_action& a) {
    workers_[a.slot]->signal(a.signo);
}

inline void pool_impl::execute(core::complete_action& a) {
    auto it = pending_.find(a.task);
    if (it == pending_.end()) {
        return;
    }
    auto handler = std::move(it->second.handler);
    pending_.erase(it);
    completion_.complete(std::move(handler), a.error, std::move(a.result));
}

void pool_impl::execute(core::run_finished_action&) {
    timer_.cancel();
    end_waiting_allocations(errc::shutting_down);
    if (inputs_) {
        inputs_->close_descriptor();  // no process starts any more
    }
    events_.finish();
    health_.post(core_.health());  // not live, before anyone waiting for the end hears of it
    if (run_handler_) {
        run_handler h(std::move(*run_handler_));
        run_handler_.reset();
        completion_.complete(std::move(h), error_code());
    }
    for (auto& h : shutdown_handlers_) {
        completion_.complete(std::move(h), error_code());
    }
    shutdown_handlers_.clear();
}

void pool_impl::execute(core::notify_action& a) {
    events_.push(a.event);
    if (params_.on_worker_event) {
        params_.on_worker_event(a.event);
    }
}

void pool_impl::next_event(event_handler&& handler) {
    const std::uint64_t wait = next_event_wait_.fetch_add(1, std::memory_order_relaxed);
    // Connected in the caller's context, as for submit; the cancellation is posted.
    auto slot = asio::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) {
        slot.assign(
            [weak = weak_from_this(), ex = completion_.executor(), wait](asio::cancellation_type) {
                asio::post(ex, [weak, wait] {
                    if (auto self = weak.lock()) {
                        self->events_.cancel_wait(wait);
                    }
                });
            });
    }
    completion_.on_pool_executor(
        [self = shared_from_this(), wait, h = std::move(handler)]() mutable {
            self->events_.next(std::move(h), wait, self->core_.finished());
        });
}

void pool_impl::log_output(core::line_splitter& lines, std::string_view bytes, std::size_t slot,
                           int pid, bool fork_server, bool at_exit) {
    if (!params_.on_log_line) {
        return;
    }
    const auto emit = [&](std::string_view text) {
        params_.on_log_line({.slot = slot, .pid = pid, .fork_server = fork_server, .text = text});
    };
    lines.feed(bytes, emit);
    if (at_exit) {
        lines.flush(emit);
    }
}

// --- workers -----------------------------------------------------------------------------

void pool_impl::adopt(core::slot_id s, posix::spawned_process& p) {
    forget_outputs(s);
    memory_.adopt(s, p.pid);
    workers_[s]->adopt(p.pid, std::move(p.pidfd), std::move(p.channel), std::move(p.log),
                       shared_from_this());
    core_.on_spawned(s, p.pid, core::clock::now());
}

void pool_impl::output(core::slot_id s, std::string_view bytes, bool at_exit) {
    if (!bytes.empty()) {
        core_.on_log(s, bytes);
    }
    log_output(worker_lines_[s], bytes, s, workers_[s]->pid(), false, at_exit);
}

bool pool_impl::frames(core::slot_id s, wire::frame_reader& reader) {
    return detail::take_messages(
        reader, params_.max_frame_bytes, [&] { return outputs_[s].get(); },
        [&](wire::message&& m) {
            if (const auto* hello = std::get_if<wire::hello_msg>(&m)) {
                if (!adopt_outputs(s, *hello)) {
                    return false;
                }
                workers_[s]->hello_taken();
            }
            core_.on_message(s, std::move(m), core::clock::now());
            return true;
        },
        [&](std::string what) { core_.on_protocol_error(s, std::move(what), core::clock::now()); });
}

void pool_impl::protocol_error(core::slot_id s, std::string what) {
    core_.on_protocol_error(s, std::move(what), core::clock::now());
}

void pool_impl::channel_closed(core::slot_id s, std::string how) {
    core_.on_channel_closed(s, std::move(how), core::clock::now());
}

void pool_impl::exited(core::slot_id s, core::exit_status status) {
    forget_outputs(s);
    status.oom_killed = memory_.oom_killed(s);
    core_.on_exit(s, status, core::clock::now());
}

}  // namespace torchpool::detail
