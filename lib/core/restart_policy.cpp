#include "restart_policy.hpp"

#include <algorithm>

namespace torchpool::core {

restart_policy::restart_policy(const pool_params& params)
    : backoff_(params.restart_backoff),
      until_degraded_(std::max<std::size_t>(1, params.spawn_failures_until_degraded)),
      window_(params.degraded_window),
      intensity_(params.restart_limit.restarts > 0
                     ? params.restart_limit.restarts
                     : std::max<std::size_t>(20, 10 * params.workers)),
      period_(std::max(params.restart_limit.period, std::chrono::milliseconds{1})),
      interval_(std::chrono::duration_cast<clock::duration>(period_) /
                static_cast<clock::rep>(intensity_)),
      random_(params.seed) {}

restart_policy::decision restart_policy::next_start(unsigned failures, bool counts,
                                                    time_point now) {
    // The first failure since the child was healthy restarts at once.
    decision d{.at = now + restart_delay(backoff_, failures > 0 ? failures - 1 : 0, random_)};
    if (!counts) {
        return d;
    }
    // GCRA: a restart conforms if it comes no earlier than its theoretical arrival time
    // less the burst tolerance (period - interval), which lets `intensity_` restarts
    // through at once and paces the rest to one per interval.
    const clock::duration tolerance = clock::duration(period_) - interval_;
    const time_point earliest = theoretical_arrival_ - tolerance;
    const bool held_back = earliest > d.at;
    d.paced = held_back;
    d.at = std::max(d.at, earliest);
    theoretical_arrival_ = std::max(d.at, theoretical_arrival_) + interval_;
    if (held_back && !pacing_) {
        pacing_ = d.pacing_began = true;
    } else if (!held_back && pacing_) {
        pacing_ = false;
        d.pacing_ended = true;
    }
    return d;
}

bool restart_policy::start_failed(std::string why, bool any_worker_ready, time_point now) {
    last_error_ = std::move(why);
    ++failed_in_a_row_;
    if (degraded_ || failed_in_a_row_ < until_degraded_ || any_worker_ready) {
        return false;
    }
    if (last_success_ != time_point::min() && now - last_success_ < window_) {
        return false;  // a start succeeded recently: this may be a transient
    }
    degraded_ = true;
    return true;
}

bool restart_policy::start_succeeded(time_point now) {
    failed_in_a_row_ = 0;
    last_success_ = now;
    const bool recovered = degraded_;
    degraded_ = false;
    return recovered;
}

}  // namespace torchpool::core
