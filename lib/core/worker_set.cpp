#include "worker_set.hpp"

#include "sizing.hpp"

namespace torchpool::core {

const char* to_string(worker_state s) noexcept {
    switch (s) {
        case worker_state::backoff:
            return "backoff";
        case worker_state::starting:
            return "starting";
        case worker_state::idle:
            return "idle";
        case worker_state::busy:
            return "busy";
        case worker_state::stopping:
            return "stopping";
        case worker_state::stopped:
            return "stopped";
    }
    return "unknown";
}

worker_set::worker_set(const pool_params& params, const task_table& tasks)
    : tasks_(tasks),
      dispatch_(slot_capacity(params), params.prefetch),
      gate_(slot_capacity(params), params.max_concurrent_starts) {
    supervised_child::observer* observer = this;
    workers_.reserve(slot_capacity(params));
    for (slot_id s = 0; s < slot_capacity(params); ++s) {
        workers_.emplace_back(s, params.log_tail_bytes, params.load_extensions, observer);
    }
}

void worker_set::on_child_state(std::size_t id, child_state from, child_state to) {
    if (from == child_state::starting) {
        gate_.start_ended();
    }
    if (to == child_state::starting) {
        gate_.start_began();
    }
    if (from == child_state::running) {
        --running_;
        dispatch_.not_idle(id);
    }
    if (to == child_state::running) {
        ++running_;  // ready, and sent nothing yet
        dispatch_.became_idle(id);
    }
    if (from == child_state::stopped) {
        --stopped_;
    }
    if (to == child_state::stopped) {
        ++stopped_;
        gate_.withdraw(id);
    }
}

void worker_set::on_child_timer(std::size_t id, time_point from, time_point to) {
    if (from != time_point::max()) {
        timers_.erase({from, id});
    }
    if (to != time_point::max()) {
        timers_.emplace(to, id);
    }
}

worker_state worker_set::state_of(slot_id slot) const {
    switch (workers_.at(slot).child.state()) {
        case child_state::backoff:
            return worker_state::backoff;
        case child_state::starting:
            return worker_state::starting;
        case child_state::running:
            return tasks_.sent(slot).empty() ? worker_state::idle : worker_state::busy;
        case child_state::stopping:
            return worker_state::stopping;
        case child_state::stopped:
            return worker_state::stopped;
    }
    return worker_state::stopped;
}

std::vector<slot_id> worker_set::due(time_point now) const {
    std::vector<slot_id> due;
    for (auto it = timers_.begin(); it != timers_.end() && it->first <= now; ++it) {
        due.push_back(it->second);
    }
    return due;
}

void worker_set::count(pool_stats& stats) const {
    for (slot_id s = 0; s < workers_.size(); ++s) {
        switch (state_of(s)) {
            case worker_state::backoff:
                ++(gate_.waiting(s) ? stats.workers_waiting : stats.workers_backoff);
                break;
            case worker_state::starting:
                ++stats.workers_starting;
                break;
            case worker_state::idle:
                ++stats.workers_idle;
                break;
            case worker_state::busy:
                ++stats.workers_busy;
                break;
            case worker_state::stopping:
                ++stats.workers_stopping;
                break;
            case worker_state::stopped:
                ++stats.workers_stopped;
                break;
        }
    }
}

}  // namespace torchpool::core
