#include "memory_limits.hpp"

namespace torchpool::detail {

memory_limits::memory_limits(const memory_params& params, std::uint64_t output_bytes,
                             std::size_t slots)
    : params_(params), output_bytes_(output_bytes), oom_seen_(slots, 0) {
    if (params.hard_limit_bytes > 0 && params.use_cgroups) {
        if (auto made = posix::memory_cgroups::create(slots, params.hard_limit_bytes + output_bytes,
                                                      cgroup_problem_)) {
            cgroups_.emplace(std::move(*made));
        }
    }
}

void memory_limits::adopt(std::size_t slot, int pid) const {
    if (cgroups_) {
        // Charged from here on: before its hello, so before any task it runs.
        cgroups_->enter(slot, pid);
    }
}

bool memory_limits::oom_killed(std::size_t slot) {
    if (!cgroups_) {
        return false;
    }
    const auto kills = cgroups_->oom_kills(slot);
    if (!kills || *kills <= oom_seen_[slot]) {
        return false;
    }
    oom_seen_[slot] = *kills;
    return true;
}

std::string memory_limits::describe() const {
    const auto& m = params_;
    if (m.hard_limit_bytes == 0 && m.soft_limit_bytes == 0) {
        return {};
    }
    const auto mib = [](std::uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; };
    std::string text = "memory limits per worker:";
    if (m.soft_limit_bytes > 0) {
        text += " soft " + mib(m.soft_limit_bytes) + " (recycle after the task),";
    }
    if (m.hard_limit_bytes > 0) {
        text += " hard " + mib(m.hard_limit_bytes) + " (kill now),";
    }
    text += " read every " + std::to_string(m.sample_interval.count()) + " ms while busy";
    if (cgroups_) {
        text +=
            "; the hard limit is enforced by the kernel in a memory cgroup per worker (" +
            cgroups_->describe() + "), whose limit is " +
            mib(params_.hard_limit_bytes + output_bytes_) +
            ": the hard limit plus the worker's output memory, since results it wrote count there";
    } else if (m.hard_limit_bytes > 0) {
        text += "; the hard limit is enforced by sampling only, since " +
                (m.use_cgroups ? cgroup_problem_
                               : std::string("pool_params::memory.use_cgroups is off"));
    }
    if (m.limit_address_space && m.hard_limit_bytes > 0) {
        text += "; each worker's address space is capped at the hard limit (RLIMIT_AS)";
    }
    return text;
}

}  // namespace torchpool::detail
