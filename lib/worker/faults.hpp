// Fault injection in the worker SDK (pool_params::faults): the failure the pool asked a task
// to provoke, for users' tests of their own failure handling.
#pragma once

#include <torchpool/task.hpp>

namespace torchpool::worker::detail {

/// Provokes `f` for the task about to run. A crash, exit, hang or garbage never returns; a
/// leak or delay returns true (the task then runs); `fail` returns false (the task is failed
/// without running).
bool provoke(int channel_fd, const fault& f);

}  // namespace torchpool::worker::detail
