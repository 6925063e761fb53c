#include "supervised_child.hpp"

namespace torchpool::core {

const char* to_string(child_state s) noexcept {
    switch (s) {
        case child_state::backoff:
            return "backoff";
        case child_state::starting:
            return "starting";
        case child_state::running:
            return "running";
        case child_state::stopping:
            return "stopping";
        case child_state::stopped:
            return "stopped";
    }
    return "unknown";
}

const char* to_string(timer_purpose p) noexcept {
    switch (p) {
        case timer_purpose::none:
            return "none";
        case timer_purpose::restart:
            return "restart";
        case timer_purpose::start_deadline:
            return "start deadline";
        case timer_purpose::stop_grace:
            return "stop grace";
        case timer_purpose::cancel_grace:
            return "cancel grace";
        case timer_purpose::channel_grace:
            return "channel grace";
    }
    return "unknown";
}

void supervised_child::begin_start(time_point now, time_point give_up_at) {
    ever_started_ = true;
    pid_ = 0;
    reason_ = stop_reason::none;
    killed_ = false;
    asked_to_stop_ = false;
    process_start_ = now;
    log_.clear();
    set_state(child_state::starting);
    set_timer(timer_purpose::start_deadline, give_up_at);
}

stop_step supervised_child::stop(stop_reason why, bool force, time_point now,
                                 clock::duration grace) {
    switch (state_) {
        case child_state::stopped:
            return stop_step::none;
        case child_state::backoff:
            retire();
            return stop_step::none;
        case child_state::stopping:
            // Already on its way out: only a kill can be added.
            if (!force || killed_) {
                return stop_step::none;
            }
            killed_ = true;
            clear_timer();
            return stop_step::kill;
        case child_state::starting:
        case child_state::running:
            break;
    }
    reason_ = why;
    set_state(child_state::stopping);
    if (force) {
        killed_ = true;
        clear_timer();
        return stop_step::kill;
    }
    killed_ = false;
    asked_to_stop_ = true;
    set_timer(timer_purpose::stop_grace, now + grace);
    return stop_step::ask;
}

void supervised_child::set_timer(timer_purpose what, time_point at) {
    const time_point from = timer_;
    timer_ = at;
    due_ = at == time_point::max() ? timer_purpose::none : what;
    if (from != at && observer_) {
        observer_->on_child_timer(id_, from, at);
    }
}

void supervised_child::set_state(child_state to) {
    const child_state from = state_;
    state_ = to;
    if (from != to && observer_) {
        observer_->on_child_state(id_, from, to);
    }
}

}  // namespace torchpool::core
