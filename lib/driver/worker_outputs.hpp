// One worker process's output memory, as the host holds it: the memfd the worker sent with
// its hello, mapped read-only once its size is checked to be sealed, and the blocks of it
// that its replies placed and that callers now hold. Every reference a reply makes is
// checked (inside the memory, not overlapping a block still held) before it becomes a
// caller's tensor; a bad one is that worker's protocol error. When a caller lets go of a
// block (on any thread), the offset is queued and `on_release` is called once, so the pool
// tells the worker on its own executor; a worker that is gone is told nothing, and the
// mapping stays as long as any caller holds a block of it.
#pragma once

#include "../posix/clone.hpp"
#include "../shm/arena.hpp"
#include "../wire/messages.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

namespace torchpool::detail {

/// Bytes of all workers' output memory that callers hold (for pool_stats).
using held_counter = std::shared_ptr<std::atomic<std::uint64_t>>;

class worker_outputs final : public wire::shared_space,
                             public std::enable_shared_from_this<worker_outputs> {
public:
    /// Maps the memfd a worker sent (see shm::mapping::map_read_only); or what is wrong with
    /// it, in words. `on_release` is called, on the releasing thread, when a block is let go
    /// and none was waiting to be told.
    static std::variant<std::shared_ptr<worker_outputs>, std::string> adopt(
        posix::unique_fd fd, std::size_t max_bytes, held_counter held,
        std::function<void(worker_outputs&)> on_release);

    worker_outputs(std::shared_ptr<shm::mapping> memory, held_counter held,
                   std::function<void(worker_outputs&)> on_release)
        : memory_(std::move(memory)), held_(std::move(held)), on_release_(std::move(on_release)) {}

    /// A reply's tensor at `where`: checked, then held until the caller lets go.
    std::variant<shared_bytes, std::string> claim(wire::shared_ref where) override;

    /// The offsets let go since the last call, to send in a release message.
    std::vector<std::uint64_t> take_released();
    /// The worker is gone: nothing more is queued or told.
    void orphan();

    std::size_t size() const noexcept { return memory_->size(); }

private:
    friend class held_block;
    void let_go(std::uint64_t offset);

    std::shared_ptr<shm::mapping> memory_;
    held_counter held_;
    std::function<void(worker_outputs&)> on_release_;
    std::mutex mutex_;
    std::map<std::uint64_t, std::uint64_t> blocks_;  // offset -> length, held by callers
    std::vector<std::uint64_t> released_;
    bool orphaned_ = false;
};

}  // namespace torchpool::detail
