// What becomes of a task whose worker failed under it (died, broke the protocol, went over its
// memory limit): the retry and poison policy, as one pure function. The task table keeps the
// failures; the coordinator carries the verdict out.
#pragma once

#include <cstddef>

namespace torchpool::core {

enum class after_failure {
    cancelled,  ///< its caller had asked to stop it, and it has stopped: not run again
    poison,     ///< it failed under `poison.deaths` workers: fails as a poison task
    retry,      ///< it runs again, on another worker
    fail,       ///< it fails with the cause
};

struct failure_context {
    bool cancel_requested = false;
    std::size_t failures = 0;       ///< workers that failed under it, this one included
    std::size_t poison_deaths = 0;  ///< poison_params::deaths (0: never a poison task)
    unsigned retries_left = 0;
    bool before_deadline = true;  ///< its deadline, if any, has not passed
    bool pool_stopping = false;
};

constexpr after_failure decide(const failure_context& c) noexcept {
    if (c.cancel_requested) {
        return after_failure::cancelled;
    }
    if (c.poison_deaths > 0 && c.failures >= c.poison_deaths) {
        return after_failure::poison;
    }
    if (c.retries_left > 0 && c.before_deadline && !c.pool_stopping) {
        return after_failure::retry;
    }
    return after_failure::fail;
}

}  // namespace torchpool::core
