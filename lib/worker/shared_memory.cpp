#include "shared_memory.hpp"

#include "../wire/codec.hpp"

#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>

#include <unistd.h>

namespace torchpool::worker::detail {

namespace {

std::size_t size_from_environment(const char* name, std::size_t otherwise) {
    if (const char* text = std::getenv(name)) {
        char* end = nullptr;
        const unsigned long long value = std::strtoull(text, &end, 10);
        if (end != text && *end == '\0') {
            return static_cast<std::size_t>(value);
        }
    }
    return otherwise;
}

// The pool's whole input memory as one region, which keeps the mapping alive.
class mapped_region final : public torchpool::detail::shared_region {
public:
    explicit mapped_region(std::shared_ptr<shm::mapping> memory)
        : shared_region(memory.get(), 0, memory->base()), memory_(std::move(memory)) {}

private:
    std::shared_ptr<shm::mapping> memory_;
};

std::size_t bytes_for(dtype type, const std::vector<std::int64_t>& shape) {
    std::size_t elements = 1;
    for (const auto d : shape) {
        if (d < 0) {
            throw std::invalid_argument("allocate_output: negative dimension " + std::to_string(d) +
                                        " in the shape");
        }
        if (d != 0 && elements > std::numeric_limits<std::size_t>::max() / element_size(type) /
                                     static_cast<std::size_t>(d)) {
            throw std::invalid_argument("allocate_output: the shape has too many elements");
        }
        elements *= static_cast<std::size_t>(d);
    }
    return elements * element_size(type);
}

}  // namespace

shared_memory_setup shared_memory_setup::from_environment() {
    shared_memory_setup setup;
    const std::size_t fd = size_from_environment("TORCHPOOL_INPUTS_FD", 0);
    setup.inputs_fd = fd > 0 && fd < (1u << 20) ? static_cast<int>(fd) : -1;
    setup.output_bytes = size_from_environment("TORCHPOOL_OUTPUT_BYTES", 0);
    setup.inline_below = size_from_environment("TORCHPOOL_INLINE_BELOW", setup.inline_below);
    return setup;
}

shared_memory::shared_memory(const shared_memory_setup& setup, std::string& problems)
    : inline_below_(setup.inline_below) {
    if (setup.inputs_fd >= 0) {
        auto mapped = shm::mapping::map_read_only(posix::unique_fd(setup.inputs_fd),
                                                  std::numeric_limits<std::size_t>::max());
        if (auto* memory = std::get_if<std::shared_ptr<shm::mapping>>(&mapped)) {
            inputs_ = *memory;
            inputs_region_ = std::make_shared<const mapped_region>(inputs_);
        } else {
            problems += "cannot map the pool's input memory (fd " +
                        std::to_string(setup.inputs_fd) + "): " + std::get<std::string>(mapped) +
                        "\n";
        }
    }
    if (setup.output_bytes > 0) {
        auto made = shm::mapping::create("torchpool-worker-outputs", setup.output_bytes,
                                         shm::writers::anyone);
        if (auto* memory = std::get_if<std::shared_ptr<shm::mapping>>(&made)) {
            outputs_fd_.reset(::dup((*memory)->fd()));
            outputs_ = std::make_shared<shm::arena>(*memory);
        } else {
            problems += "cannot make output memory of " + std::to_string(setup.output_bytes) +
                        " bytes: " + std::get<std::string>(made) + "\n";
        }
    }
}

std::variant<shared_bytes, std::string> shared_memory::claim(wire::shared_ref where) {
    if (!inputs_) {
        return std::string(
            "it is placed in the pool's input memory, which this worker has not "
            "mapped");
    }
    if (!inputs_->contains(where.offset, where.length)) {
        return "its bytes [" + std::to_string(where.offset) + ", +" + std::to_string(where.length) +
               ") are outside the pool's input memory of " + std::to_string(inputs_->size()) +
               " bytes";
    }
    return shared_bytes(std::static_pointer_cast<const torchpool::detail::shared_region>(
                            std::static_pointer_cast<const mapped_region>(inputs_region_)),
                        inputs_->base() + where.offset, static_cast<std::size_t>(where.length),
                        false);
}

output_tensor shared_memory::allocate(dtype type, std::vector<std::int64_t> shape) {
    const std::size_t bytes = bytes_for(type, shape);
    if (outputs_) {
        if (auto block = outputs_->allocate(bytes)) {
            std::shared_ptr<const shm::block> kept = block;
            handed_out_[block->offset()] = kept;
            return {{block->data(), bytes}, {type, std::move(shape), {block->data(), bytes}, kept}};
        }
    }
    return heap_output(type, std::move(shape));
}

output_tensor heap_output(dtype type, std::vector<std::int64_t> shape) {
    const std::size_t bytes = bytes_for(type, shape);
    constexpr std::align_val_t alignment{shm::block_alignment};
    std::shared_ptr<std::byte> heap(
        static_cast<std::byte*>(::operator new(std::max<std::size_t>(bytes, 1), alignment)),
        [](std::byte* p) { ::operator delete(p, alignment); });
    return {{heap.get(), bytes}, {type, std::move(shape), {heap.get(), bytes}, heap}};
}

std::optional<wire::shared_ref> shared_memory::place_one(tensor_view& t) {
    if (!outputs_ || t.data.empty()) {
        return std::nullopt;
    }
    const auto& memory = outputs_->memory();
    const std::byte* at = t.data.data();
    if (at >= memory.base() && at < memory.base() + memory.size()) {
        const auto offset = static_cast<std::size_t>(at - memory.base());
        auto it = handed_out_.upper_bound(offset);
        if (it != handed_out_.begin()) {
            --it;
            auto block = it->second.lock();
            if (block && offset + t.data.size() <= block->offset() + block->size()) {
                // Placed once: the pool frees it by this offset, and a second reference to
                // the same block would overlap the first.
                handed_out_.erase(it);
                sent_[offset] = std::move(block);
                return wire::shared_ref{offset, t.data.size()};
            }
        }
    }
    if (t.data.size() < inline_below_) {
        return std::nullopt;
    }
    auto block = outputs_->allocate(t.data.size());
    if (!block) {
        return std::nullopt;  // full: the pool's callers hold earlier results; inline then
    }
    std::memcpy(block->data(), t.data.data(), t.data.size());
    t.data = {block->data(), t.data.size()};
    t.owner = block;
    const std::size_t offset = block->offset();
    sent_[offset] = std::move(block);
    return wire::shared_ref{offset, t.data.size()};
}

std::vector<std::optional<wire::shared_ref>> shared_memory::place(
    std::vector<tensor_view>& tensors) {
    std::vector<std::optional<wire::shared_ref>> placed;
    placed.reserve(tensors.size());
    for (auto& t : tensors) {
        placed.push_back(place_one(t));
    }
    std::erase_if(handed_out_, [](const auto& entry) { return entry.second.expired(); });
    return placed;
}

void shared_memory::release(const wire::release_msg& m) {
    for (const auto offset : m.offsets) {
        sent_.erase(offset);
    }
}

}  // namespace torchpool::worker::detail
