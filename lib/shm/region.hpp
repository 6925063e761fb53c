// What the library keeps behind a torchpool::shared_bytes: a block of one shared-memory
// space (the pool's inputs, or one worker's outputs), and where it starts in that space.
#pragma once

#include <torchpool/task.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>

namespace torchpool::detail {

class shared_region {
public:
    shared_region(const void* space, std::uint64_t offset, const std::byte* base) noexcept
        : space_(space), offset_(offset), base_(base) {}
    shared_region(const shared_region&) = delete;
    shared_region& operator=(const shared_region&) = delete;
    virtual ~shared_region() = default;

    /// Identifies the space (an arena), never dereferenced.
    const void* space() const noexcept { return space_; }
    std::uint64_t offset() const noexcept { return offset_; }
    /// The address of the region's first byte in this process.
    const std::byte* base() const noexcept { return base_; }

private:
    const void* space_;
    std::uint64_t offset_;
    const std::byte* base_;
};

/// Offset in `space` of the bytes `b` holds, when they are in that space.
inline std::optional<std::uint64_t> offset_in(const shared_bytes& b, const void* space) noexcept {
    if (!b || space == nullptr || b.region()->space() != space) {
        return std::nullopt;
    }
    return b.region()->offset() + static_cast<std::uint64_t>(b.bytes().data() - b.region()->base());
}

}  // namespace torchpool::detail
