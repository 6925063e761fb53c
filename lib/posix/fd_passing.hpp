// Descriptors passed over a Unix socket with the bytes they belong to (SCM_RIGHTS), the one
// implementation in the project: the pool's worker channels (stream sockets), the fork
// server's control socket on both sides (a SOCK_SEQPACKET socket: a receive is one packet).
// The kernel ties descriptors to the first byte of the send that carries them, and a receive
// never reads past such a byte with another's descriptors, so they arrive with their bytes
// and in order. A receive never blocks; a send blocks only if asked to.
#pragma once

#include "clone.hpp"

#include <cstddef>
#include <span>
#include <vector>

#include <sys/types.h>
#include <sys/uio.h>

namespace torchpool::posix {

/// The most descriptors one send may carry, and one receive accepts.
inline constexpr std::size_t max_passed_fds = 64;

enum class send_mode { dont_wait, wait };

/// Sends what it can of `iov` (`count` ranges), with `fds` attached to its first byte (none
/// if empty; at most max_passed_fds). Returns the bytes sent, or -1 with errno (EAGAIN: no
/// room, nothing sent, so the descriptors go with the next try; only with dont_wait). Never
/// raises SIGPIPE.
ssize_t send_with_fds(int socket, const iovec* iov, std::size_t count, std::span<const int> fds,
                      send_mode mode = send_mode::dont_wait) noexcept;

/// What a receive had to cut.
struct receive_cuts {
    /// Descriptors were closed by the kernel: the peer sent more than max_passed_fds with one
    /// send, or this process had no descriptor left under its open-file limit. The stream
    /// can no longer be trusted.
    bool descriptors = false;
    /// A packet (SOCK_SEQPACKET) was longer than `size`: its rest is lost.
    bool bytes = false;
};

/// Receives up to `size` bytes into `data`; descriptors that came with them are appended to
/// `fds`, close-on-exec. Returns the bytes received (0 at end of stream, or an empty packet),
/// or -1 with errno; what had to be cut is added to `cuts`.
ssize_t receive_with_fds(int socket, void* data, std::size_t size, std::vector<unique_fd>& fds,
                         receive_cuts& cuts) noexcept;

}  // namespace torchpool::posix
