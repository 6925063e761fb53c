#include "frame_buffers.hpp"

#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

namespace torchpool::wire {

namespace {

constexpr unsigned smallest_class = 6;  // 64 words: 512 bytes
constexpr unsigned largest_class = 13;  // 8192 words: 64 KiB
constexpr std::size_t kept_per_class_bytes = std::size_t(2) << 20;

// Held for one push or pop: a spin lock costs a fraction of a mutex's instructions uncontended,
// and yields when another thread holds it (that thread may have been preempted).
class spin_lock {
public:
    void lock() noexcept {
        while (held_.exchange(true, std::memory_order_acquire)) {
            while (held_.load(std::memory_order_relaxed)) {
                std::this_thread::yield();
            }
        }
    }
    void unlock() noexcept { held_.store(false, std::memory_order_release); }

private:
    std::atomic<bool> held_{false};
};

class size_class final : public kj::ArrayDisposer {
public:
    explicit size_class(std::size_t words)
        : words_(words),
          most_kept_(std::max<std::size_t>(16, kept_per_class_bytes / (words * 8))) {}

    std::size_t words() const noexcept { return words_; }

    capnp::word* take() const {
        {
            const std::lock_guard lock(mutex_);
            if (!free_.empty()) {
                capnp::word* buffer = free_.back();
                free_.pop_back();
                return buffer;
            }
        }
        return new capnp::word[words_]();  // zeroed
    }

    void give_back(capnp::word* buffer, std::size_t dirty) const {
        std::memset(buffer, 0, std::min(dirty, words_) * sizeof(capnp::word));
        {
            const std::lock_guard lock(mutex_);
            if (free_.size() < most_kept_) {
                free_.push_back(buffer);
                return;
            }
        }
        delete[] buffer;
    }

    std::size_t kept() const {
        const std::lock_guard lock(mutex_);
        return free_.size();
    }

private:
    void disposeImpl(void* first, std::size_t, std::size_t count, std::size_t,
                     void (*)(void*)) const override {
        give_back(static_cast<capnp::word*>(first), count);
    }

    std::size_t words_;
    std::size_t most_kept_;
    mutable spin_lock mutex_;
    mutable std::vector<capnp::word*> free_;
};

// Larger than the largest class: allocated and freed each time.
class plain final : public kj::ArrayDisposer {
    void disposeImpl(void* first, std::size_t, std::size_t, std::size_t,
                     void (*)(void*)) const override {
        delete[] static_cast<capnp::word*>(first);
    }
};
const plain plain_buffers;

// Never destroyed: a frame may outlive every static (one held by another static object).
const std::array<size_class, largest_class - smallest_class + 1>& classes() {
    static const auto* made = [] {
        return new std::array<size_class, largest_class - smallest_class + 1>{
            size_class(64),   size_class(128),  size_class(256),  size_class(512),
            size_class(1024), size_class(2048), size_class(4096), size_class(8192)};
    }();
    return *made;
}

}  // namespace

frame_buffer take_frame_buffer(std::size_t words) {
    const std::size_t rounded = std::bit_ceil(std::max<std::size_t>(words, 1));
    const unsigned index = static_cast<unsigned>(std::countr_zero(rounded));
    if (index > largest_class) {
        return {new capnp::word[words](), words, &plain_buffers};
    }
    const auto& c = classes()[index < smallest_class ? 0 : index - smallest_class];
    return {c.take(), c.words(), &c};
}

kj::Array<capnp::word> adopt_frame_buffer(frame_buffer buffer, std::size_t used) {
    return kj::Array<capnp::word>(buffer.words, used, *buffer.disposer);
}

void return_frame_buffer(frame_buffer buffer, std::size_t dirty) {
    if (buffer.disposer == &plain_buffers) {
        delete[] buffer.words;
        return;
    }
    static_cast<const size_class*>(buffer.disposer)->give_back(buffer.words, dirty);
}

std::size_t frame_buffers_kept() {
    std::size_t n = 0;
    for (const auto& c : classes()) {
        n += c.kept();
    }
    return n;
}

}  // namespace torchpool::wire
