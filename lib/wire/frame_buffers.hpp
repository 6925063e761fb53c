// Buffers for frames, reused. Cap'n Proto builds a message in zeroed memory, so a fresh
// frame costs an allocation, its zeroing and, for a large one, fresh pages. Here a frame's
// buffer goes back to a free list of its size class when the frame is destroyed, zeroed
// again only where the frame used it. Frames are built on callers' threads (a request, in
// submit) and destroyed on the pool's (once its task ends): the lists are shared, each
// behind a spin lock held for a push or a pop. A process that forks (the fork server) does so
// from the one thread that encodes, so no child starts with a list locked.
#pragma once

#include <capnp/common.h>
#include <kj/array.h>

#include <cstddef>

namespace torchpool::wire {

/// A zeroed buffer of at least `words` words, whose words are given back zeroed by
/// `adopt`; kept for reuse when its size class has one (up to 64 KiB), else plain.
struct frame_buffer {
    capnp::word* words = nullptr;
    std::size_t capacity = 0;
    const kj::ArrayDisposer* disposer = nullptr;
};
frame_buffer take_frame_buffer(std::size_t words);

/// The first `used` words of `buffer` as a frame: when it is destroyed, those words are
/// zeroed and the buffer is kept for the next frame of its size class (or freed).
kj::Array<capnp::word> adopt_frame_buffer(frame_buffer buffer, std::size_t used);

/// Gives back a buffer that no frame adopted; `dirty`: words written since it was taken.
void return_frame_buffer(frame_buffer buffer, std::size_t dirty);

/// Buffers waiting for reuse, in all classes (for tests).
std::size_t frame_buffers_kept();

}  // namespace torchpool::wire
