// The transport seam: a message as it travels, its frame together with the descriptors that go
// with it, encoded and decoded here for both ends: what goes out is bytes and descriptors
// (`outgoing`), and what comes in is decoded with the descriptors that came with it, each
// checked to be what the message's kind carries and handed over typed, so that no descriptor
// is lost or left to guesswork. The fork server's answers are its first users (a new worker
// hands itself over with its pidfd, channel and output); sockets move the bytes and
// descriptors through posix::fd_passing.
#pragma once

#include "../posix/clone.hpp"
#include "codec.hpp"
#include "messages.hpp"

#include <capnp/common.h>

#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace torchpool::wire {

/// What goes out on a socket: a frame, and the descriptors sent with its first byte
/// (borrowed: they must stay open until it is sent).
struct outgoing {
    frame bytes;
    std::vector<int> descriptors;
};

// --- the fork server's answers (fork server, its helpers and each new worker -> pool) --------

/// A new worker hands itself over for the request `sequence`: its pidfd, the pool's end of its
/// channel, and the read end of its output.
outgoing hand_over_worker(std::uint64_t sequence, int pid, int pidfd, int channel, int output);
/// A helper of the fork server hands itself over (its pidfd), for the pool to reap.
outgoing hand_over_helper(int pid, int pidfd);
/// No worker for the request `sequence`: `error` says why. `pidfd`, unless -1, is of a process
/// that was made and died before it could hand itself over (`pid`), for the pool to reap.
outgoing refuse_fork(std::uint64_t sequence, std::string error, int pid = 0, int pidfd = -1);

struct worker_handed_over {
    std::uint64_t sequence = 0;
    int pid = 0;
    posix::unique_fd pidfd, channel, output;
};
struct helper_handed_over {
    int pid = 0;
    posix::unique_fd pidfd;
};
struct fork_refused {
    std::uint64_t sequence = 0;
    std::string error;
    int pid = 0;
    posix::unique_fd process;  ///< a pidfd to reap, or none
};
/// A packet that breaks the protocol: what is wrong (a verb phrase, as "sent a malformed
/// message: ..."), and the pidfd of a process it handed over anyway, to reap (or none).
struct fork_server_violation {
    std::string what;
    posix::unique_fd process;
};

using from_fork_server = std::variant<hello_msg, worker_handed_over, helper_handed_over,
                                      fork_refused, fork_server_violation>;

/// Decodes one packet of the fork server's control socket with the descriptors that came
/// with it. A message the fork server does not send, or one with other descriptors than its
/// kind carries, is a violation.
from_fork_server decode_from_fork_server(std::span<const capnp::word> words,
                                         std::vector<posix::unique_fd> fds);

/// The descriptors a decoded packet holds (for tests and fuzzing: none may get lost).
std::size_t descriptors_held(const from_fork_server& m) noexcept;

}  // namespace torchpool::wire
