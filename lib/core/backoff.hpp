// Restart delays: exponential in the number of consecutive failures, with jitter.
#pragma once

#include <torchpool/pool_params.hpp>

#include <chrono>
#include <cstdint>

namespace torchpool::core {

/// A small deterministic random source (splitmix64), so that runs with the same seed make
/// the same decisions.
class random_source {
public:
    explicit random_source(std::uint64_t seed) : state_(seed) {}
    std::uint64_t next() noexcept;
    /// Uniform in [0, 1).
    double uniform() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

private:
    std::uint64_t state_;
};

/// Delay before restarting a worker slot that failed `failures` times in a row; zero when
/// it has not failed (it was stopped on purpose and is replaced at once).
std::chrono::milliseconds restart_delay(const backoff_params& params, unsigned failures,
                                        random_source& random);

}  // namespace torchpool::core
