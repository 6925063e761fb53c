// How a reaped process ended, as waitid() tells it: the vocabulary the process code gives the
// pool's core (lib/core uses it; nothing here knows the core).
#pragma once

#include <optional>

namespace torchpool::posix {

struct exit_status {
    std::optional<int> exit_code;
    std::optional<int> signal;
    bool core_dumped = false;
    /// The kernel's OOM killer killed it inside its memory cgroup (known for certain only
    /// where the pool made one).
    bool oom_killed = false;
};

}  // namespace torchpool::posix
