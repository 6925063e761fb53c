#include "memory_watch.hpp"

#include <algorithm>

namespace torchpool::core {

memory_watch::memory_watch(std::size_t slots, const memory_params& params)
    : readings_(std::max<std::size_t>(1, slots)),
      slots_(std::max<std::size_t>(1, slots)),
      params_(params),
      tick_(std::max<clock::duration>(
          std::chrono::duration_cast<clock::duration>(params.sample_interval) /
              static_cast<clock::rep>(slots_),
          std::chrono::milliseconds{1})) {}

void memory_watch::start(time_point now) {
    if (enabled()) {
        next_ = now + tick_;
    }
}

}  // namespace torchpool::core
