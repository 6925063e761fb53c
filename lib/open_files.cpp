#include "posix/limits.hpp"
#include <torchpool/open_files.hpp>

namespace torchpool {

open_files_reservation::open_files_reservation(std::uint64_t count, const std::string& what)
    : count_(count) {
    const auto room = posix::reserve_fds(count, what);
    soft_before_ = room.soft_before;
    soft_after_ = room.soft_after;
    hard_ = room.hard;
}

open_files_reservation::~open_files_reservation() {
    posix::release_fds(count_);
}

}  // namespace torchpool
