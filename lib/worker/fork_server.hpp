// The fork server mode of the worker SDK: a worker executable started once by the pool,
// with its libraries and model loaded, that makes workers by forking itself.
#pragma once

#include "../wire/messages.hpp"

#include <cstddef>
#include <variant>

namespace torchpool::worker::detail {

/// In a worker made by the fork server: which slot of the pool it fills. Its channel to
/// the pool is on fd 3, stdout and stderr go to its own log pipe.
struct forked_worker {
    std::size_t slot = 0;
};

/// Serves fork requests on `control_fd` (a SOCK_SEQPACKET socket to the pool), after
/// sending `hello`. Each worker is created with clone3(CLONE_PARENT | CLONE_PIDFD), so it
/// is the pool's child, not ours; the worker itself then sends the pool a pidfd of its own
/// (pidfd_open of itself: no pid is trusted), the pool's end of its channel and the read end
/// of its log pipe with SCM_RIGHTS, before it closes this socket; we keep none of them.
///
/// Returns an exit code in the server, when the pool closes the control channel (0) or
/// breaks the protocol (2); returns `forked_worker` in each new worker.
std::variant<int, forked_worker> run_fork_server(int control_fd, const wire::hello_msg& hello);

}  // namespace torchpool::worker::detail
