// Descriptors passed over a Unix stream socket with the bytes they belong to (SCM_RIGHTS):
// the kernel ties them to the first byte of the send that carries them, and a receive never
// reads past such a byte with another's descriptors, so they arrive with their bytes and in
// order. Neither call blocks; both are for non-blocking sockets.
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

/// Sends what it can of `iov` (`count` ranges), with `fds` attached to its first byte (none
/// if empty; at most max_passed_fds). Returns the bytes sent, or -1 with errno (EAGAIN: no
/// room, nothing sent, so the descriptors go with the next try). Never raises SIGPIPE.
ssize_t send_with_fds(int socket, const iovec* iov, std::size_t count,
                      std::span<const int> fds) noexcept;

/// Receives up to `size` bytes into `data`; descriptors that came with them are appended to
/// `fds`, close-on-exec. Returns the bytes received (0 at end of stream), or -1 with errno.
/// `truncated` is set when the peer sent more descriptors than max_passed_fds with one
/// send: the kernel closed the rest, so the stream can no longer be trusted.
ssize_t receive_with_fds(int socket, void* data, std::size_t size, std::vector<unique_fd>& fds,
                         bool& truncated) noexcept;

}  // namespace torchpool::posix
