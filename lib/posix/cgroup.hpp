// Memory cgroups for workers: one directory per worker slot, under a directory of the pool's
// own beneath the host's cgroup, with the kernel enforcing the slot's memory limit and
// counting its OOM kills. Works with cgroup v2 (memory.max, memory.events) where the memory
// controller is delegated to the host's cgroup, and with cgroup v1 (memory.limit_in_bytes,
// memory.oom_control) where the host may write to its memory hierarchy (as root, usually).
// Where neither holds, `create` says why and the pool samples memory instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace torchpool::posix {

class memory_cgroups {
public:
    enum class version { v1, v2 };

    /// Makes a cgroup per slot, each limited to `limit_bytes`. Returns nullopt and sets
    /// `why` (a sentence) when this host does not allow it.
    static std::optional<memory_cgroups> create(std::size_t slots, std::uint64_t limit_bytes,
                                                std::string& why);
    memory_cgroups(memory_cgroups&&) noexcept;
    memory_cgroups& operator=(memory_cgroups&&) = delete;
    /// Removes the cgroups (the kernel allows it once their processes are gone).
    ~memory_cgroups();

    version kind() const noexcept { return version_; }
    const std::string& directory() const noexcept { return root_; }
    /// "cgroup v1 at /sys/fs/cgroup/memory/..." for notices.
    std::string describe() const;

    /// Moves process `pid` into the cgroup of `slot`. False if it could not (it is gone).
    bool enter(std::size_t slot, int pid) const;
    /// OOM kills the kernel has made in the cgroup of `slot` since it was made; nullopt if
    /// unreadable.
    std::optional<std::uint64_t> oom_kills(std::size_t slot) const;

private:
    memory_cgroups(version v, std::string root, std::size_t slots);
    std::string slot_dir(std::size_t slot) const;

    version version_;
    std::string root_;  // empty once moved from
    std::size_t slots_;
};

}  // namespace torchpool::posix
