#include "restart_policy.hpp"

namespace torchpool::core {

bool restart_policy::failed_start(unsigned in_a_row, std::string why, bool any_worker_ready) {
    last_error_ = std::move(why);
    if (degraded_ || in_a_row < until_degraded_ || any_worker_ready) {
        return false;
    }
    degraded_ = true;
    return true;
}

}  // namespace torchpool::core
