#include "shm_regions.hpp"

#include <cerrno>
#include <cstring>
#include <limits>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace torchpool::serve {

namespace {

std::string quoted(std::string_view s) {
    return "'" + std::string(s) + "'";
}

// The object's size now, or what is wrong.
std::optional<std::uint64_t> object_size(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0 || st.st_size < 0) {
        return std::nullopt;
    }
    return static_cast<std::uint64_t>(st.st_size);
}

// Moves `size` bytes with `io` (pread or pwrite at `position`, whose byte pointer is `bytes`)
// until all are moved; false if `io` stops short (the object ended) or fails.
template <class Byte, class Io>
bool transfer_all(int fd, Byte* bytes, std::size_t size, std::uint64_t position, Io io) {
    std::size_t done = 0;
    while (done < size) {
        const ssize_t n = io(fd, bytes + done, size - done, static_cast<off_t>(position + done));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        done += static_cast<std::size_t>(n);
    }
    return true;
}

}  // namespace

shm_region::~shm_region() {
    ::close(fd_);
}

std::optional<std::string> shm_region::check(std::uint64_t at, std::uint64_t size,
                                             std::string_view what) const {
    if (at > byte_size_ || size > byte_size_ - at) {
        return std::string(what) + " needs " + std::to_string(size) + " bytes at offset " +
               std::to_string(at) + " of shared-memory region " + quoted(name_) + ", which has " +
               std::to_string(byte_size_);
    }
    return std::nullopt;
}

std::optional<std::string> shm_region::read(std::uint64_t at, std::span<std::byte> out,
                                            std::string_view what) const {
    if (auto wrong = check(at, out.size(), what)) {
        return wrong;
    }
    if (!transfer_all(fd_, out.data(), out.size(), offset_ + at, ::pread)) {
        return std::string(what) + ": shared-memory region " + quoted(name_) +
               " could not be read whole (its object " + quoted(key_) +
               " was shrunk after it was registered, or is unreadable)";
    }
    return std::nullopt;
}

std::optional<std::string> shm_region::write(std::uint64_t at, std::span<const std::byte> bytes,
                                             std::string_view what) const {
    if (auto wrong = check(at, bytes.size(), what)) {
        return wrong;
    }
    // pwrite past the end would grow the object: a shrunk one is refused instead.
    const auto size = object_size(fd_);
    if (!size || *size < offset_ + at + bytes.size()) {
        return std::string(what) + ": shared-memory region " + quoted(name_) + " is no longer " +
               "whole (its object " + quoted(key_) + " was shrunk after it was registered)";
    }
    if (!transfer_all(fd_, bytes.data(), bytes.size(), offset_ + at, ::pwrite)) {
        return std::string(what) + ": shared-memory region " + quoted(name_) +
               " could not be written (" + std::strerror(errno) + ")";
    }
    return std::nullopt;
}

std::optional<std::string> shm_regions::add(std::string_view name, std::string_view key,
                                            std::uint64_t offset, std::uint64_t byte_size) {
    if (name.empty() || name.size() > 128) {
        return std::string("a region's name must have 1 to 128 characters");
    }
    const std::lock_guard lock(mutex_);
    if (regions_.find(name) != regions_.end()) {
        return "shared-memory region " + quoted(name) +
               " is already registered; unregister it first";
    }
    if (regions_.size() >= most_regions) {
        return "this server holds " + std::to_string(most_regions) +
               " shared-memory regions already; unregister one first";
    }
    if (key.size() < 2 || key.size() > 255 || key.front() != '/' ||
        key.find('/', 1) != std::string_view::npos || key.find('\0') != std::string_view::npos) {
        return "the key of region " + quoted(name) + " must name a POSIX shared-memory object: " +
               "'/' and then 1 to 254 characters, none of them '/' (as shm_open takes it), not " +
               quoted(key);
    }
    if (byte_size == 0) {
        return "the byte_size of region " + quoted(name) + " must be at least 1";
    }
    if (offset > std::numeric_limits<std::uint64_t>::max() - byte_size ||
        offset + byte_size > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) {
        return "the offset and byte_size of region " + quoted(name) + " are too large";
    }
    const std::string key_text(key);
    const int fd = ::shm_open(key_text.c_str(), O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        return "cannot open the shared-memory object " + quoted(key) + " of region " +
               quoted(name) + ": " + std::strerror(errno);
    }
    auto region =
        std::make_shared<const shm_region>(std::string(name), key_text, offset, byte_size, fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        return "the shared-memory object " + quoted(key) + " is not a memory object";
    }
    if (static_cast<std::uint64_t>(st.st_size) < offset + byte_size) {
        return "region " + quoted(name) + " asks for " + std::to_string(byte_size) +
               " bytes at offset " + std::to_string(offset) + ", but the object " + quoted(key) +
               " has " + std::to_string(st.st_size);
    }
    regions_.emplace(std::string(name), std::move(region));
    return std::nullopt;
}

bool shm_regions::remove(std::string_view name) {
    const std::lock_guard lock(mutex_);
    const auto it = regions_.find(name);
    if (it == regions_.end()) {
        return false;
    }
    regions_.erase(it);
    return true;
}

std::shared_ptr<const shm_region> shm_regions::find(std::string_view name) const {
    const std::lock_guard lock(mutex_);
    const auto it = regions_.find(name);
    return it == regions_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<const shm_region>> shm_regions::list() const {
    const std::lock_guard lock(mutex_);
    std::vector<std::shared_ptr<const shm_region>> out;
    out.reserve(regions_.size());
    for (const auto& [name, region] : regions_) {
        out.push_back(region);
    }
    return out;
}

void shm_regions::clear() {
    const std::lock_guard lock(mutex_);
    regions_.clear();
}

std::size_t shm_regions::size() const {
    const std::lock_guard lock(mutex_);
    return regions_.size();
}

}  // namespace torchpool::serve
