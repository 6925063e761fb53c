// Triton's system shared-memory extension: regions of POSIX shared-memory objects that a
// client on the same host registers by key (/v2/systemsharedmemory/...), which its infer
// requests then name for inputs and outputs instead of carrying their bytes over HTTP.
//
// A registration opens the object once and keeps its descriptor, so it stays the object the
// client named even if the key is unlinked or reused. The server never maps a client's object:
// it reads and writes with pread and pwrite, so a client that shrinks its object under a
// request gets a 400, not a server killed by SIGBUS. A request holds the regions it names, so
// unregistering one in use lets that request finish with it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace torchpool::serve {

/// One registered region: `byte_size` bytes at `offset` in the object named `key`.
class shm_region {
public:
    shm_region(std::string name, std::string key, std::uint64_t offset, std::uint64_t byte_size,
               int fd)
        : name_(std::move(name)),
          key_(std::move(key)),
          offset_(offset),
          byte_size_(byte_size),
          fd_(fd) {}
    shm_region(const shm_region&) = delete;
    shm_region& operator=(const shm_region&) = delete;
    ~shm_region();

    const std::string& name() const noexcept { return name_; }
    const std::string& key() const noexcept { return key_; }
    std::uint64_t offset() const noexcept { return offset_; }
    std::uint64_t byte_size() const noexcept { return byte_size_; }

    /// Where `size` bytes at `at` in the region would be, checked against its size: what is
    /// wrong, in words naming `what` (e.g. "input 'x'"), or nullopt.
    std::optional<std::string> check(std::uint64_t at, std::uint64_t size,
                                     std::string_view what) const;
    /// Reads `out.size()` bytes at `at` in the region into `out` (checked first); an error
    /// if the object was shrunk under it.
    std::optional<std::string> read(std::uint64_t at, std::span<std::byte> out,
                                    std::string_view what) const;
    /// Writes `bytes` at `at` in the region (checked first); an error if the object was
    /// shrunk under it.
    std::optional<std::string> write(std::uint64_t at, std::span<const std::byte> bytes,
                                     std::string_view what) const;

private:
    std::string name_;
    std::string key_;
    std::uint64_t offset_;
    std::uint64_t byte_size_;
    int fd_;
};

/// Where a tensor's bytes are in a region: `byte_size` bytes at `offset` in it (checked).
/// Holding it keeps the region open.
struct region_bytes {
    std::shared_ptr<const shm_region> region;
    std::uint64_t offset = 0;
    std::uint64_t byte_size = 0;
};

/// The registered regions, by name. Thread-safe: HTTP threads register, unregister and look
/// up regions concurrently.
class shm_regions {
public:
    /// Most regions registered at once: each holds a descriptor.
    static constexpr std::size_t most_regions = 256;

    /// Registers region `name`: opens the object `key` (read and write) and checks that it
    /// holds `offset + byte_size` bytes. What is wrong, in words, or nullopt.
    std::optional<std::string> add(std::string_view name, std::string_view key,
                                   std::uint64_t offset, std::uint64_t byte_size);
    /// Forgets region `name` (requests that hold it finish with it); false if there is none.
    bool remove(std::string_view name);
    /// Forgets every region.
    void clear();
    /// The region `name`, or null.
    std::shared_ptr<const shm_region> find(std::string_view name) const;
    /// The regions, in name order.
    std::vector<std::shared_ptr<const shm_region>> list() const;
    std::size_t size() const;

private:
    mutable std::mutex mutex_;
    std::map<std::string, std::shared_ptr<const shm_region>, std::less<>> regions_;
};

}  // namespace torchpool::serve
