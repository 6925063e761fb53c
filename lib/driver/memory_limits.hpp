// How the pool's memory limits are enforced on this host, for the driver: a memory cgroup
// per worker slot when a hard limit is set and the host allows one (the kernel enforces the
// limit and counts OOM kills), else nothing here (the core samples). It puts each new
// worker in its slot's cgroup, tells whether a reaped worker was OOM-killed there, and says
// in one sentence which mechanism is in force.
#pragma once

#include "../posix/cgroup.hpp"
#include <torchpool/pool_params.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace torchpool::detail {

class memory_limits {
public:
    /// `output_bytes`: each worker's output memory. Its pages are charged to the worker that
    /// writes them, so a cgroup's limit is the hard limit plus that much: results held by
    /// callers are not the worker's own memory (the sampled limits leave them out too).
    memory_limits(const memory_params& params, std::uint64_t output_bytes, std::size_t slots);

    /// Puts the new worker `pid` of `slot` in its cgroup, if there is one.
    void adopt(std::size_t slot, int pid) const;
    /// True if the kernel OOM-killed a process in `slot`'s cgroup since the last call.
    bool oom_killed(std::size_t slot);
    /// "memory limits per worker: ..." for a notice; empty when no limit is set.
    std::string describe() const;

private:
    memory_params params_;
    std::uint64_t output_bytes_;
    std::optional<posix::memory_cgroups> cgroups_;
    std::string cgroup_problem_;  // why there is no cgroup, when a hard limit wants one
    std::vector<std::uint64_t> oom_seen_;
};

}  // namespace torchpool::detail
