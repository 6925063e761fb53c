#include "shutdown_sequence.hpp"

#include "wording.hpp"
#include <torchpool/error.hpp>

namespace torchpool::core {

bool shutdown_sequence::shutdown() {
    const bool was_started = phase_.started();
    if (!phase_.drain()) {
        return false;
    }
    // Heartbeats and memory limits go on while admitted tasks finish: a worker that hangs
    // or grows while the pool drains is still found out (else the drain could wait for it
    // for ever). They stop when the run finishes.
    slots_.stop();
    if (!was_started) {
        flow_.fail_queued(errc::shutting_down, shut_down_before_start());
        lifecycle_.park_all();
    }
    return true;
}

void shutdown_sequence::stop(time_point now) {
    if (!phase_.stop()) {
        return;
    }
    heartbeat_.stop();
    memory_.stop();
    slots_.stop();
    flow_.abort_all();
    for (slot_id s = 0; s < workers_.size(); ++s) {
        if (workers_[s].child.state() != child_state::stopped) {
            lifecycle_.stop(s, stop_reason::pool_stop, true, now);  // one in backoff is retired
        }
    }
    finish_if_done(now);
}

void shutdown_sequence::drain(time_point now) {
    if (tasks_.queued() > 0 || tasks_.waiting() > 0) {
        serve_what_is_left(now);
        return;
    }
    for (slot_id s = 0; s < workers_.size(); ++s) {
        switch (workers_.state_of(s)) {
            case worker_state::backoff:
                lifecycle_.retire(s);
                break;
            case worker_state::idle:
            case worker_state::starting:
                lifecycle_.stop(s, stop_reason::shutdown, false, now);
                break;
            case worker_state::busy:
            case worker_state::stopping:
            case worker_state::stopped:
                break;
        }
    }
}

// The last workers were asked to exit while nothing was queued, or left the pool, and then a
// task came back to the queue (its worker died under it). One starts again, in a slot in use
// if there is one, so that the tasks run instead of waiting for ever (and the run with them).
void shutdown_sequence::serve_what_is_left(time_point now) {
    if (!workers_.all_stopped()) {
        return;  // a worker may still take them, or come back after its exit
    }
    for (slot_id s = 0; s < workers_.size(); ++s) {
        if (!slots_.parked(s)) {
            lifecycle_.wait_for_start(s, now);
            return;
        }
    }
    if (const auto s = slots_.unpark()) {
        lifecycle_.wait_for_start(*s, now);
    }
}

void shutdown_sequence::finish_if_done(time_point now) {
    if (!phase_.ending() || !tasks_.empty() || !workers_.all_stopped()) {
        return;
    }
    if (server_.enabled() && !server_.stopped()) {
        // Every worker is gone; the fork server goes last (its exit comes back here). Even
        // on stop() it is asked first, not killed: it then answers the fork request it may
        // be working on before it exits, so the worker it made is handed over (and killed)
        // rather than left as a child nobody knows; SIGKILL follows after stop_grace.
        server_.stop(false, now);
        if (!server_.stopped()) {
            return;  // its exit comes back here
        }
        // It had no process (it waited to restart): retired at once, nothing will come back.
    }
    heartbeat_.stop();
    memory_.stop();
    phase_.finish();
    actions_.push_back(run_finished_action{});
}

}  // namespace torchpool::core
