// The restart policy: when a child that ended starts again, and when the pool may call
// itself unable to start workers.
//
// - Backoff per child: the first failure since it was healthy restarts at once, later ones
//   wait longer (exponential, with jitter).
// - Intensity for the pool (OTP's "N restarts in T"), enforced as a rate (the generic cell
//   rate algorithm): a burst of `restarts` is let through, further ones are paced to
//   `restarts` per `period` instead of piling up.
// - Degraded only on evidence: starts failing in a row, pool-wide, with no worker ready and
//   no start succeeding for a window. Deaths of workers that did start never count.
#pragma once

#include "backoff.hpp"
#include "types.hpp"
#include <torchpool/pool_params.hpp>

#include <chrono>
#include <string>

namespace torchpool::core {

class restart_policy {
public:
    explicit restart_policy(const pool_params& params);

    /// When a child that failed `failures` times since it was healthy starts next (`now`
    /// for at once). `counts` : it is a restart the intensity limits (not a planned
    /// replacement).
    struct decision {
        time_point at;
        bool paced = false;         ///< held back by the intensity
        bool pacing_began = false;  ///< this restart was the first held back by the intensity
        bool pacing_ended = false;  ///< restarts had been held back; this one is not
    };
    decision next_start(unsigned failures, bool counts, time_point now);

    /// A start failed (`why`, a sentence). True when this makes the pool degraded.
    bool start_failed(std::string why, bool any_worker_ready, time_point now);
    /// A start succeeded (a worker or the fork server became ready). True when this ends a
    /// degraded state.
    bool start_succeeded(time_point now);

    bool degraded() const noexcept { return degraded_; }
    bool pacing() const noexcept { return pacing_; }
    const std::string& last_error() const noexcept { return last_error_; }
    /// Restarts allowed per period, resolved.
    std::size_t intensity() const noexcept { return intensity_; }
    std::chrono::milliseconds period() const noexcept { return period_; }

private:
    backoff_params backoff_;
    std::size_t until_degraded_;
    std::chrono::milliseconds window_;
    std::size_t intensity_;
    std::chrono::milliseconds period_;
    clock::duration interval_;  // period / intensity: the paced rate
    // GCRA: when the next restart is due at the paced rate; the clock's epoch at first, which
    // lets the first burst through.
    time_point theoretical_arrival_{};
    random_source random_;
    std::size_t failed_in_a_row_ = 0;
    time_point last_success_ = time_point::min();
    bool degraded_ = false;
    bool pacing_ = false;
    std::string last_error_;
};

}  // namespace torchpool::core
