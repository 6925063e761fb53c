// Room for the pool's descriptors under the process's open-file limit (RLIMIT_NOFILE).
//
// Each worker holds three descriptors in the host (pidfd, channel, output pipe), so a few
// hundred workers pass the soft limit of 1024 that many hosts keep. The pool raises the
// soft limit toward the hard one when it needs to (as systemd advises programs that need
// many files to do), gives its children the limit the host had, and fails at once, with
// the way to raise it, when even the hard limit is too low.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace torchpool::posix {

struct fd_room {
    std::uint64_t needed = 0;  ///< descriptors open now plus those reserved by pools
    std::uint64_t soft_before = 0;
    std::uint64_t soft_after = 0;  ///< the soft limit in effect now
    std::uint64_t hard = 0;
    bool raised() const noexcept { return soft_after > soft_before; }
};

/// Reserves `count` descriptors for a pool (released by `release_fds`), and makes sure the
/// soft limit leaves room for everything open now plus every reservation, raising it
/// (to twice what is needed, within the hard limit) if not. Throws std::system_error
/// (too_many_files_open), with a message that names the limit and how to raise it, when
/// the hard limit is too low; nothing is reserved then. `what` says who needs them, e.g.
/// "a pool of 1024 workers".
fd_room reserve_fds(std::uint64_t count, const std::string& what);

/// Gives back what `reserve_fds` reserved.
void release_fds(std::uint64_t count) noexcept;

/// `count` descriptors reserved (reserve_fds) for as long as it lives.
class fd_reservation {
public:
    fd_reservation(std::uint64_t count, const std::string& what)
        : count_(count), room_(reserve_fds(count, what)) {}
    fd_reservation(const fd_reservation&) = delete;
    fd_reservation& operator=(const fd_reservation&) = delete;
    ~fd_reservation() { release_fds(count_); }

    const fd_room& room() const noexcept { return room_; }

private:
    std::uint64_t count_;
    fd_room room_;
};

/// The soft limit the process had before torchpool first raised it, for its children
/// (a program may use select(), which cannot take descriptors above 1023); nullopt if it
/// never raised it. Async-signal-safe.
std::optional<std::uint64_t> soft_fd_limit_for_children() noexcept;

}  // namespace torchpool::posix
