// Where the server places a request's tensors: in its model's pool input memory (shared memory
// the workers map), so that they reach a worker with no further copy. Both the request's
// parsing (JSON data, binary data, shared-memory regions) and the batcher's stacking write
// there.
#pragma once

#include <torchpool/task.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace torchpool {
class pool;
}

namespace torchpool::serve {

/// A tensor of this type and shape in the pool's input memory (pool::allocate), or an empty
/// tensor if it has none (the memory is full, or off).
using input_memory = std::function<tensor(dtype, std::vector<std::int64_t>)>;

/// `workers`' input memory, as an input_memory (batcher.cpp). `workers` must outlive it.
input_memory input_memory_of(pool& workers);

/// Tensors placed in input memory start at offsets that are multiples of this (the pool's
/// block alignment); a view of received bytes is taken only at such an offset.
inline constexpr std::size_t input_alignment = 64;

/// A tensor of `type` and `shape`, `bytes` long, to fill in place: from `memory` when it gives
/// one of that size, else in the tensor's own bytes (zeroed).
inline tensor placed_tensor(const input_memory& memory, dtype type, std::vector<std::int64_t> shape,
                            std::size_t bytes) {
    if (memory) {
        tensor t = memory(type, shape);
        if (t.shared && t.bytes().size() == bytes) {
            return t;
        }
    }
    return tensor(type, std::move(shape), std::string(bytes, '\0'));
}

}  // namespace torchpool::serve
