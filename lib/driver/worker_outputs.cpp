#include "worker_outputs.hpp"

namespace torchpool::detail {

// A block a caller holds; letting go of the last copy tells the worker's memory.
class held_block final : public shared_region {
public:
    held_block(std::shared_ptr<worker_outputs> outputs, std::uint64_t offset,
               const std::byte* base) noexcept
        : shared_region(outputs.get(), offset, base), outputs_(std::move(outputs)) {}
    ~held_block() override { outputs_->let_go(offset()); }

private:
    std::shared_ptr<worker_outputs> outputs_;
};

std::variant<std::shared_ptr<worker_outputs>, std::string> worker_outputs::adopt(
    posix::unique_fd fd, std::size_t max_bytes, held_counter held,
    std::function<void(worker_outputs&)> on_release) {
    auto mapped = shm::mapping::map_read_only(std::move(fd), max_bytes);
    if (auto* why = std::get_if<std::string>(&mapped)) {
        return "sent output memory that cannot be used: " + *why;
    }
    return std::make_shared<worker_outputs>(std::get<std::shared_ptr<shm::mapping>>(mapped),
                                            std::move(held), std::move(on_release));
}

std::variant<shared_bytes, std::string> worker_outputs::claim(wire::shared_ref where) {
    if (!memory_->contains(where.offset, where.length)) {
        return "its bytes [" + std::to_string(where.offset) + ", +" + std::to_string(where.length) +
               ") are outside the worker's output memory of " + std::to_string(memory_->size()) +
               " bytes";
    }
    {
        const std::lock_guard lock(mutex_);
        // The block that starts at or before it, and the one after, must end before it or
        // start after it: a block still held cannot be handed out again.
        const std::uint64_t end = where.offset + where.length;
        auto next = blocks_.lower_bound(where.offset);
        const bool overlaps_next =
            next != blocks_.end() && (next->first < end || next->first == where.offset);
        const bool overlaps_previous = next != blocks_.begin() && [&] {
            auto previous = std::prev(next);
            return previous->first + previous->second > where.offset;
        }();
        if (overlaps_next || overlaps_previous) {
            return "its bytes [" + std::to_string(where.offset) + ", +" +
                   std::to_string(where.length) +
                   ") overlap a block of the worker's output memory that a caller still holds";
        }
        blocks_.emplace(where.offset, where.length);
    }
    held_->fetch_add(where.length, std::memory_order_relaxed);
    std::byte* data = memory_->base() + where.offset;
    return shared_bytes(std::make_shared<const held_block>(shared_from_this(), where.offset, data),
                        data, static_cast<std::size_t>(where.length), false);
}

void worker_outputs::let_go(std::uint64_t offset) {
    {
        const std::lock_guard lock(mutex_);
        auto it = blocks_.find(offset);
        if (it == blocks_.end()) {
            return;
        }
        held_->fetch_sub(it->second, std::memory_order_relaxed);
        blocks_.erase(it);
        if (orphaned_) {
            return;
        }
        released_.push_back(offset);
        if (released_.size() == 1) {
            // Posted to the pool's executor; under the lock, so that once orphan() has
            // returned nothing more is posted.
            on_release_(*this);
        }
    }
}

std::vector<std::uint64_t> worker_outputs::take_released() {
    const std::lock_guard lock(mutex_);
    return std::exchange(released_, {});
}

void worker_outputs::orphan() {
    const std::lock_guard lock(mutex_);
    orphaned_ = true;
    released_.clear();
    on_release_ = nullptr;
}

}  // namespace torchpool::detail
