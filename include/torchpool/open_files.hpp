// Descriptors a host needs beside its pools' own, e.g. a server's connections.
//
// Pools reserve the descriptors their workers hold in the host (3 each) and raise the
// process's soft limit on open files (RLIMIT_NOFILE) toward the hard one when it is short.
// A host that opens many descriptors of its own reserves them here too, so that one count
// covers everything: the limit is raised once for all, and a pool made later still finds its
// room.
#pragma once

#include <cstdint>
#include <string>

namespace torchpool {

class open_files_reservation {
public:
    /// Reserves `count` descriptors for `what` (in words, e.g. "4096 HTTP connections"),
    /// raising the soft limit if what is open now plus every reservation needs it. Throws
    /// std::system_error (std::errc::too_many_files_open) when even the hard limit is too low,
    /// with the way to raise it.
    open_files_reservation(std::uint64_t count, const std::string& what);
    open_files_reservation(const open_files_reservation&) = delete;
    open_files_reservation& operator=(const open_files_reservation&) = delete;
    ~open_files_reservation();

    std::uint64_t count() const noexcept { return count_; }
    /// The soft limit before this reservation, and in effect now.
    std::uint64_t soft_limit_before() const noexcept { return soft_before_; }
    std::uint64_t soft_limit() const noexcept { return soft_after_; }
    std::uint64_t hard_limit() const noexcept { return hard_; }
    bool raised() const noexcept { return soft_after_ > soft_before_; }

private:
    std::uint64_t count_;
    std::uint64_t soft_before_ = 0;
    std::uint64_t soft_after_ = 0;
    std::uint64_t hard_ = 0;
};

}  // namespace torchpool
