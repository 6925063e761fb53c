// The pool core's tasks: admission, dispatch, completion, the messages of workers, and what
// follows every event (see pool_core.hpp). How a task ends otherwise (cancelled, past its
// deadline, under a failed worker) is in pool_core_task_ends.cpp, lifecycles in
// pool_core_lifecycle.cpp, resource policies in pool_core_resources.cpp.
#include "pool_core.hpp"

#include <torchpool/error.hpp>

#include <boost/asio/error.hpp>

#include <algorithm>

#include <signal.h>

namespace torchpool::core {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

pool_core::pool_core(const pool_params& params, process_probe probe)
    : params_(params),
      report_(params.on_worker_event || params.event_buffer > 0, actions_),
      restart_(params),
      tasks_(slot_capacity(params)),
      workers_(params),
      heartbeat_(slot_capacity(params), params.heartbeat_interval, params.heartbeat_timeout),
      memory_(slot_capacity(params), params.memory),
      inspect_(std::move(probe), params.memory, workers_, tasks_),
      slots_(params_, workers_, phase_, report_),
      server_(params, report_, actions_),
      quarantine_(params.poison.quarantine),
      lifecycle_(params_, workers_, tasks_, slots_, restart_, server_, heartbeat_, memory_,
                 inspect_, phase_, report_, actions_),
      flow_(params_, tasks_, workers_, quarantine_, restart_, phase_, inspect_, lifecycle_, report_,
            actions_),
      health_(heartbeat_, memory_, workers_, tasks_, inspect_, slots_, lifecycle_, flow_, report_,
              actions_),
      ending_(phase_, workers_, tasks_, slots_, server_, heartbeat_, memory_, lifecycle_, flow_,
              actions_) {}

worker_state pool_core::state_of(slot_id slot) const {
    return workers_.state_of(slot);
}

// --- tasks -------------------------------------------------------------------------------

void pool_core::submit(task_id id, std::string method, const task_options& options,
                       time_point now) {
    if (flow_.submit(id, std::move(method), options, now)) {
        dispatch(now);
    }
}

void pool_core::reject(task_id id, boost::system::error_code error, std::string summary) {
    flow_.reject(id, error, std::move(summary));
}

void pool_core::cancel_task(task_id id, boost::asio::cancellation_type type, time_point now) {
    if (flow_.cancel(id, type, now)) {
        settle(now);  // it left the queue
    }
}

void pool_core::dispatch(time_point now) {
    flow_.dispatch(now);
    if (tasks_.queued() > 0) {
        maybe_grow(now);
    }
}

std::size_t pool_core::resize(std::size_t workers, time_point now) {
    std::size_t n = 0;
    lifecycle_.carry_out(slots_.resize(workers, n), now);
    if (!phase_.admitting()) {
        return n;
    }
    report_.apply(facts::resized{.workers = n});
    settle(now);
    return n;
}

void pool_core::maybe_grow(time_point now) {
    const std::size_t starting = workers_.gate().in_progress() + workers_.gate().waiting_count();
    if (tasks_.queued() > starting && !restart_.degraded()) {
        lifecycle_.carry_out(
            slots_.grow(tasks_.queued() - starting, inspect_.probe().available_memory), now);
    }
}

// --- messages from workers ---------------------------------------------------------------

void pool_core::on_message(slot_id s, wire::message&& msg, time_point now) {
    const auto state = workers_[s].child.state();
    if (state == child_state::stopping || state == child_state::stopped) {
        return;  // it is being stopped; what it still says no longer matters
    }
    if (auto* hello = std::get_if<wire::hello_msg>(&msg)) {
        on_hello(s, *hello, now);
    } else if (auto* reply = std::get_if<wire::reply_msg>(&msg)) {
        on_reply(s, std::move(*reply), now);
    } else if (auto* beat = std::get_if<wire::heartbeat_msg>(&msg)) {
        if (health_.heartbeat_answered(s, *beat, now)) {
            dispatch(now);
        }
    } else {
        on_protocol_error(s, sent_pool_message(wire::message_name(msg)), now);
    }
}

void pool_core::on_hello(slot_id s, const wire::hello_msg& hello, time_point now) {
    if (auto problem = lifecycle_.hello(s, hello, now)) {
        on_protocol_error(s, std::move(*problem), now);
        return;
    }
    dispatch(now);
    settle(now);
}

void pool_core::on_reply(slot_id s, wire::reply_msg&& reply, time_point now) {
    auto& w = workers_[s];
    const auto& sent = tasks_.sent(s);
    if (w.child.state() != child_state::running || sent.empty() || sent.front().id != reply.id) {
        // The sentence of the failed task names the task it runs.
        on_protocol_error(s, unexpected_reply(reply.id, !sent.empty()), now);
        return;
    }
    const auto done = flow_.answered(s, std::move(reply), now);
    lifecycle_.answered(s, done.abandoned, now);
    if (done.idle) {
        health_.task_ended(s, now);
    }
    lifecycle_.carry_out(slots_.answered(s, done.idle, now), now);
    dispatch(now);
    settle(now);
}

void pool_core::on_protocol_error(slot_id s, std::string what, time_point now) {
    auto end = lifecycle_.protocol_error(s, what, now);
    if (!end) {
        return;
    }
    carry_out(s, *end, now);
    lifecycle_.stop(s, stop_reason::protocol, true, now);
    settle(now);
}

void pool_core::on_channel_closed(slot_id s, std::string what, time_point now) {
    lifecycle_.channel_closed(s, std::move(what), now);
}

void pool_core::on_log(slot_id s, std::string_view bytes) {
    workers_[s].child.append_log(bytes);
}

// --- after every event -------------------------------------------------------------------

void pool_core::settle(time_point now) {
    // Each check is cheap and almost always false: a running pool with nobody waiting.
    bool requeued = flow_.take_requeued();  // a task came back to the queue
    if (tasks_.waiting() > 0 && flow_.admit_waiting()) {
        requeued = true;  // a queued task completed or left, making room
    }
    if (requeued) {
        dispatch(now);
    }
    if (phase_.ending()) {
        ending_.step(now);
    }
    if (workers_.gate().anyone_waiting()) {
        lifecycle_.start_waiting(now);  // a start may have ended, making room for the next
    }
}

// --- time --------------------------------------------------------------------------------

void pool_core::on_timer(time_point now) {
    flow_.deadlines_due(now);
    server_.on_timer(phase_.stopping(), inspect_.probe().cpu_time, now);
    health_.due(now);
    if (const auto due = slots_.next_housekeeping(); due && *due <= now) {
        lifecycle_.carry_out(slots_.housekeeping(now), now);
    }
    // Worker timers that are due; handling one may set others, so take the due ones first.
    for (const slot_id s : workers_.due(now)) {
        if (workers_[s].child.timer() > now) {
            continue;  // moved on since
        }
        if (auto closed = lifecycle_.timer_due(s, now)) {
            on_protocol_error(s, std::move(*closed), now);
        }
    }
    settle(now);
}

pool_stats pool_core::stats() const {
    pool_stats st = report_.counters();
    workers_.count(st);
    st.queue_depth = tasks_.queued();
    st.waiting_for_room = tasks_.waiting();
    st.degraded = restart_.degraded();
    st.restarts_paced = restart_.pacing();
    // Parked slots (in the stopped state) are not workers.
    st.workers_stopped -= std::min(st.workers_stopped, slots_.slots() - slots_.in_use());
    st.workers_target = slots_.size();
    st.intra_op_threads = params_.intra_op_threads;
    st.inter_op_threads = params_.inter_op_threads;
    st.fork_server_pid = server_.child().pid();
    st.fork_server_ready = server_.ready();
    st.last_start_error = restart_.last_error();
    return st;
}

}  // namespace torchpool::core
