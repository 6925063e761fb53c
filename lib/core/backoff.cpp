#include "backoff.hpp"

#include <algorithm>
#include <cmath>

namespace torchpool::core {

std::uint64_t random_source::next() noexcept {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

std::chrono::milliseconds restart_delay(const backoff_params& params, unsigned failures,
                                        random_source& random) {
    if (failures == 0) {
        return std::chrono::milliseconds{0};
    }
    const double max = static_cast<double>(params.max.count());
    const double base = std::min(
        max, static_cast<double>(params.initial.count()) *
                 std::pow(params.multiplier, static_cast<double>(std::min(failures, 64u) - 1)));
    const double jitter = std::clamp(params.jitter, 0.0, 1.0);
    const double spread = base * (1.0 + jitter * (2.0 * random.uniform() - 1.0));
    // At least 1 ms, so that a slot that fails at once can never restart in a tight loop.
    return std::chrono::milliseconds{
        std::max<std::int64_t>(1, static_cast<std::int64_t>(std::clamp(spread, 0.0, max)))};
}

}  // namespace torchpool::core
