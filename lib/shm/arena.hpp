// Shared memory for tensor bytes: a memfd of a fixed size, mapped in this process, and the
// blocks handed out of it. Used on both sides of a worker's channel:
//
//   the pool's inputs    made by the host, writable only there (F_SEAL_FUTURE_WRITE): a
//                        worker maps it read-only and can neither write nor resize it;
//   a worker's outputs   made by the worker, which writes its results there; the host
//                        maps it read-only, after checking that its size is sealed.
//
// A sealed size is what keeps a peer from making us fault (SIGBUS) by truncating the file
// under our mapping. A block keeps its arena, and so the mapping, alive: memory a caller
// holds stays valid after the process that wrote it is gone. The arena never reads a data
// structure out of the shared bytes; its book-keeping is private memory.
#pragma once

#include "../posix/clone.hpp"
#include "region.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <variant>

namespace torchpool::shm {

/// Blocks start and end on this boundary (a cache line; enough for any dtype and for SIMD
/// loads in torch::from_blob).
inline constexpr std::size_t block_alignment = 64;

/// Who may write the memory once it is shared.
enum class writers {
    creator_only,  ///< F_SEAL_FUTURE_WRITE: other processes can map it read-only only
    anyone,        ///< whoever maps it (a worker's outputs, written by the worker)
};

/// Which offsets of an arena are in use: first fit over a free list, with neighbours merged.
/// Thread-safe (callers allocate their inputs on their own threads). Pure book-keeping, so
/// unit tests need no memory.
class block_allocator {
public:
    explicit block_allocator(std::size_t capacity);

    /// An offset of `bytes` (rounded up to block_alignment; at least one unit), or nullopt
    /// if no free range is that long.
    std::optional<std::size_t> allocate(std::size_t bytes);
    /// Gives back what `allocate` returned at `offset`; false if no block starts there.
    bool free(std::size_t offset);

    std::size_t capacity() const noexcept { return capacity_; }
    std::size_t used() const;
    std::size_t peak() const;
    std::size_t blocks() const;

private:
    mutable std::mutex mutex_;
    std::size_t capacity_;
    std::map<std::size_t, std::size_t> free_;  // offset -> length
    std::map<std::size_t, std::size_t> used_;  // offset -> length
    std::size_t used_bytes_ = 0;
    std::size_t peak_bytes_ = 0;
};

/// A memfd mapped here, with its size sealed.
class mapping {
public:
    /// Makes a memfd of `bytes` (rounded up to a page), maps it read-write, and seals its
    /// size (and, for writers::creator_only, every later writable mapping and write). The
    /// descriptor stays open, to be passed on (close-on-exec). Or why it could not, in words.
    static std::variant<std::shared_ptr<mapping>, std::string> create(const char* name,
                                                                      std::size_t bytes,
                                                                      writers who);
    /// Maps a memfd another process made, read-only, once its seals are checked: its size
    /// must be sealed (F_SEAL_SHRINK and F_SEAL_GROW) and at most `max_bytes`. The
    /// descriptor is closed; the mapping stays. Or what is wrong with it, in words.
    static std::variant<std::shared_ptr<mapping>, std::string> map_read_only(posix::unique_fd fd,
                                                                             std::size_t max_bytes);

    mapping(const mapping&) = delete;
    mapping& operator=(const mapping&) = delete;
    ~mapping();

    std::byte* base() const noexcept { return base_; }
    std::size_t size() const noexcept { return size_; }
    bool writable() const noexcept { return writable_; }
    /// The memfd, while it is kept open (create); -1 otherwise.
    int fd() const noexcept { return fd_.get(); }
    /// Closes the memfd (nothing more will be given it); the mapping stays.
    void close_fd() noexcept { fd_.reset(); }
    /// True if [offset, offset + length) lies inside the mapping.
    bool contains(std::uint64_t offset, std::uint64_t length) const noexcept {
        return offset <= size_ && length <= size_ - offset;
    }

private:
    mapping(std::byte* base, std::size_t size, bool writable, posix::unique_fd fd)
        : base_(base), size_(size), writable_(writable), fd_(std::move(fd)) {}

    std::byte* base_;
    std::size_t size_;
    bool writable_;
    posix::unique_fd fd_;
};

class arena;

/// One block of an arena: given back when the last holder lets go.
class block final : public detail::shared_region {
public:
    block(std::shared_ptr<arena> owner, std::size_t offset, std::size_t size,
          std::byte* data) noexcept
        : shared_region(owner.get(), offset, data),
          arena_(std::move(owner)),
          size_(size),
          data_(data) {}
    ~block() override;

    /// The bytes asked for (the block itself may be longer, to its alignment).
    std::size_t size() const noexcept { return size_; }
    std::byte* data() const noexcept { return data_; }
    /// The block's bytes as a tensor's, writable if the arena's mapping is.
    shared_bytes bytes(std::shared_ptr<const block> self) const noexcept;

private:
    std::shared_ptr<arena> arena_;
    std::size_t size_;
    std::byte* data_;
};

/// A mapping and the blocks handed out of it.
class arena : public std::enable_shared_from_this<arena> {
public:
    explicit arena(std::shared_ptr<mapping> memory)
        : memory_(std::move(memory)), blocks_(memory_->size()) {}

    /// A block of `bytes`, or null if the arena has no free range that long.
    std::shared_ptr<block> allocate(std::size_t bytes);

    const mapping& memory() const noexcept { return *memory_; }
    /// Closes the memfd once no process is to be given it again; the blocks stay valid.
    void close_descriptor() noexcept { memory_->close_fd(); }
    const block_allocator& usage() const noexcept { return blocks_; }
    /// Calls `f` (on the freeing thread) after each block is given back; empty: none. Once
    /// this returns, the previous `f` is not running and will not run again.
    void on_free(std::function<void()> f);

private:
    friend class block;
    void freed(std::size_t offset);

    std::shared_ptr<mapping> memory_;
    block_allocator blocks_;
    std::mutex hook_mutex_;
    std::function<void()> on_free_;
};

}  // namespace torchpool::shm
