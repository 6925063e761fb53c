#include "arena.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace torchpool::shm {

namespace {

std::size_t round_up(std::size_t n, std::size_t unit) {
    return (n + unit - 1) / unit * unit;
}

std::string failed(const char* what) {
    return std::string(what) + " failed: " + std::strerror(errno);
}

}  // namespace

// --- block_allocator ---------------------------------------------------------------------

block_allocator::block_allocator(std::size_t capacity)
    : capacity_(capacity / block_alignment * block_alignment) {
    if (capacity_ > 0) {
        free_.emplace(0, capacity_);
    }
}

std::optional<std::size_t> block_allocator::allocate(std::size_t bytes) {
    if (bytes > capacity_) {
        return std::nullopt;
    }
    const std::size_t length = std::max(round_up(bytes, block_alignment), block_alignment);
    const std::lock_guard lock(mutex_);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->second < length) {
            continue;
        }
        const std::size_t offset = it->first;
        const std::size_t rest = it->second - length;
        free_.erase(it);
        if (rest > 0) {
            free_.emplace(offset + length, rest);
        }
        used_.emplace(offset, length);
        used_bytes_ += length;
        peak_bytes_ = std::max(peak_bytes_, used_bytes_);
        return offset;
    }
    return std::nullopt;
}

bool block_allocator::free(std::size_t offset) {
    const std::lock_guard lock(mutex_);
    auto it = used_.find(offset);
    if (it == used_.end()) {
        return false;
    }
    std::size_t start = offset;
    std::size_t length = it->second;
    used_.erase(it);
    used_bytes_ -= length;
    // Merge with the free ranges on either side.
    auto next = free_.lower_bound(start);
    if (next != free_.end() && next->first == start + length) {
        length += next->second;
        next = free_.erase(next);
    }
    if (next != free_.begin()) {
        auto previous = std::prev(next);
        if (previous->first + previous->second == start) {
            start = previous->first;
            length += previous->second;
            free_.erase(previous);
        }
    }
    free_.emplace(start, length);
    return true;
}

std::size_t block_allocator::used() const {
    const std::lock_guard lock(mutex_);
    return used_bytes_;
}

std::size_t block_allocator::peak() const {
    const std::lock_guard lock(mutex_);
    return peak_bytes_;
}

std::size_t block_allocator::blocks() const {
    const std::lock_guard lock(mutex_);
    return used_.size();
}

// --- mapping -----------------------------------------------------------------------------

std::variant<std::shared_ptr<mapping>, std::string> mapping::create(const char* name,
                                                                    std::size_t bytes,
                                                                    writers who) {
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t size = round_up(std::max<std::size_t>(bytes, 1), page);
    posix::unique_fd fd(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd) {
        return failed("memfd_create");
    }
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
        return failed("ftruncate of a new memfd");
    }
    void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (base == MAP_FAILED) {
        return failed("mmap of a new memfd");
    }
    int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
    if (who == writers::creator_only) {
        seals |= F_SEAL_FUTURE_WRITE;  // this mapping stays writable; no later one can be
    }
    if (::fcntl(fd.get(), F_ADD_SEALS, seals) != 0) {
        std::string why = failed("sealing a new memfd (F_ADD_SEALS)");
        ::munmap(base, size);
        return why;
    }
    return std::shared_ptr<mapping>(
        new mapping(static_cast<std::byte*>(base), size, true, std::move(fd)));
}

std::variant<std::shared_ptr<mapping>, std::string> mapping::map_read_only(posix::unique_fd fd,
                                                                           std::size_t max_bytes) {
    const int seals = ::fcntl(fd.get(), F_GET_SEALS);
    if (seals < 0) {
        return "it is not a memfd that can be sealed (F_GET_SEALS: " +
               std::string(std::strerror(errno)) + ")";
    }
    if ((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
        return "its size is not sealed (F_SEAL_SHRINK and F_SEAL_GROW), so it could be "
               "truncated under the pool's mapping";
    }
    struct stat info {};
    if (::fstat(fd.get(), &info) != 0) {
        return failed("fstat");
    }
    const auto size = static_cast<std::size_t>(info.st_size);
    if (size == 0 || size > max_bytes) {
        return "its size, " + std::to_string(size) + " bytes, is not between 1 and " +
               std::to_string(max_bytes);
    }
    void* base = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd.get(), 0);
    if (base == MAP_FAILED) {
        return failed("mmap");
    }
    return std::shared_ptr<mapping>(
        new mapping(static_cast<std::byte*>(base), size, false, posix::unique_fd()));
}

mapping::~mapping() {
    ::munmap(base_, size_);
}

// --- arena and blocks --------------------------------------------------------------------

std::shared_ptr<block> arena::allocate(std::size_t bytes) {
    auto offset = blocks_.allocate(bytes);
    if (!offset) {
        return nullptr;
    }
    return std::make_shared<block>(shared_from_this(), *offset, bytes, memory_->base() + *offset);
}

block::~block() {
    arena_->freed(offset());
}

void arena::freed(std::size_t offset) {
    blocks_.free(offset);
    const std::lock_guard lock(hook_mutex_);
    if (on_free_) {
        on_free_();
    }
}

void arena::on_free(std::function<void()> f) {
    const std::lock_guard lock(hook_mutex_);
    on_free_ = std::move(f);
}

shared_bytes block::bytes(std::shared_ptr<const block> self) const noexcept {
    return {std::move(self), data_, size_, arena_->memory().writable()};
}

}  // namespace torchpool::shm
