// The pool's parameters, resolved in one place: checked (a clear error for each bad value),
// defaults filled in from the machine (threads per worker, concurrent starts), and what
// follows from them for the processes (their environment, the descriptors the pool holds).
// Pure functions of the parameters and the number of usable cores, so tests pass their own.
#pragma once

#include <torchpool/pool_params.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace torchpool::detail {

/// Cores this process may run on (its CPU affinity), at least 1.
std::size_t usable_cores();

/// `params`, checked and completed for a machine with `cores` usable cores. Throws
/// std::invalid_argument, naming the parameter and what it must be, for a bad value.
pool_params resolve(pool_params params, std::size_t cores);

/// What every worker (or the fork server) finds in its environment, besides the user's.
std::vector<std::string> worker_environment(const pool_params& params, std::size_t cores);

/// Descriptors the pool holds at most: three per worker slot (pidfd, channel, output pipe)
/// and, with a fork server, its three and a pidfd per helper (one per further core).
std::uint64_t descriptors_needed(const pool_params& params, std::size_t cores);

}  // namespace torchpool::detail
