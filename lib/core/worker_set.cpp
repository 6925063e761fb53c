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

const char* to_string(worker_status s) noexcept {
    switch (s) {
        case worker_status::backoff:
            return "backoff";
        case worker_status::waiting:
            return "waiting";
        case worker_status::starting:
            return "starting";
        case worker_status::idle:
            return "idle";
        case worker_status::busy:
            return "busy";
        case worker_status::probing:
            return "probing";
        case worker_status::stopping:
            return "stopping";
        case worker_status::stopped:
            return "stopped";
    }
    return "unknown";
}

worker_set::worker_set(const pool_params& params)
    : status_(slot_capacity(params), worker_status::backoff),
      dispatch_(slot_capacity(params), params.prefetch),
      gate_(slot_capacity(params), params.max_concurrent_starts) {
    supervised_child::observer* observer = this;
    workers_.reserve(slot_capacity(params));
    for (slot_id s = 0; s < slot_capacity(params); ++s) {
        workers_.emplace_back(s, params.log_tail_bytes, params.load_extensions, observer);
    }
    counts_[static_cast<std::size_t>(worker_status::backoff)] = workers_.size();
}

void worker_set::on_child_state(std::size_t id, child_state, child_state to) {
    switch (to) {
        case child_state::backoff:
            set_status(id, worker_status::backoff);
            break;
        case child_state::starting:
            set_status(id, worker_status::starting);
            break;
        case child_state::running:
            set_status(id, worker_status::idle);  // ready, and sent nothing yet
            break;
        case child_state::stopping:
            set_status(id, worker_status::stopping);
            break;
        case child_state::stopped:
            set_status(id, worker_status::stopped);
            break;
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
    switch (status_.at(slot)) {
        case worker_status::backoff:
        case worker_status::waiting:
            return worker_state::backoff;
        case worker_status::starting:
            return worker_state::starting;
        case worker_status::idle:
        case worker_status::probing:
            return worker_state::idle;
        case worker_status::busy:
            return worker_state::busy;
        case worker_status::stopping:
            return worker_state::stopping;
        case worker_status::stopped:
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
    stats.workers_backoff += count(worker_status::backoff);
    stats.workers_waiting += count(worker_status::waiting);
    stats.workers_starting += count(worker_status::starting);
    stats.workers_idle += count(worker_status::idle) + count(worker_status::probing);
    stats.workers_busy += count(worker_status::busy);
    stats.workers_stopping += count(worker_status::stopping);
    stats.workers_stopped += count(worker_status::stopped);
}

}  // namespace torchpool::core
