// A worker dies with its host *process*, never because the host thread that started it
// ended (see posix::parent_death_signal).
#pragma once

namespace torchpool::worker::detail {

/// Catches posix::parent_death_signal, which the kernel sends whenever this process's
/// parent thread ends: if the parent is then no longer the host process (whose pid the
/// pool put in TORCHPOOL_HOST_PID), the host is gone and this process kills itself with
/// SIGKILL; otherwise another thread of the host adopted it, and nothing happens. Also
/// checks once now, since the host may have died before this ran. Does nothing in a process
/// that a pool did not start. Idempotent.
void die_with_host();

}  // namespace torchpool::worker::detail
