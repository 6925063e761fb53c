// The restart policy: how long a failed child waits before its next start (exponential
// backoff with jitter), and when failed starts are evidence enough that no worker can be
// started (the pool is then degraded, and tasks fail fast with the last start error). It
// keeps the last start error for that message. Restart intensity grows here.
#pragma once

#include "backoff.hpp"
#include <torchpool/pool_params.hpp>

#include <chrono>
#include <string>

namespace torchpool::core {

class restart_policy {
public:
    restart_policy(const backoff_params& backoff, unsigned failed_starts_until_degraded,
                   std::uint64_t seed)
        : backoff_(backoff), until_degraded_(failed_starts_until_degraded), random_(seed) {}

    /// Delay before the next start of a child that failed `failures_in_a_row` times; zero
    /// when it has not failed (it was stopped on purpose and is replaced at once).
    std::chrono::milliseconds delay(unsigned failures_in_a_row) {
        return restart_delay(backoff_, failures_in_a_row, random_);
    }

    /// A start never became ready: `why` says how, `in_a_row` counts such starts of that
    /// child. Returns true when this makes the pool degraded: enough failures in a row and
    /// no worker ready.
    bool failed_start(unsigned in_a_row, std::string why, bool any_worker_ready);
    /// A worker became ready: workers can be started after all.
    void worker_ready() noexcept { degraded_ = false; }

    bool degraded() const noexcept { return degraded_; }
    const std::string& last_error() const noexcept { return last_error_; }

private:
    backoff_params backoff_;
    unsigned until_degraded_;
    random_source random_;
    bool degraded_ = false;
    std::string last_error_;
};

}  // namespace torchpool::core
