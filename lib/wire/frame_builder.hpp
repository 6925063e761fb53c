// How a message becomes a frame without being copied: Cap'n Proto builds it straight into a
// buffer from frame_buffers, after room for the segment table, which is written in front of
// it at the end; bytes the frame refers to (a caller's tensors) are segments of their own,
// written from where they are. A message that does not come out as planned is flattened.
#pragma once

#include "codec.hpp"
#include "frame_buffers.hpp"

#include <capnp/message.h>
#include <kj/array.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

namespace torchpool::wire {

// A buffer from frame_buffers, given back unless a frame adopts it (whatever was written in
// it is zeroed again then).
class taken_buffer {
public:
    explicit taken_buffer(std::size_t words) : buffer_(take_frame_buffer(words)) {}
    taken_buffer(const taken_buffer&) = delete;
    taken_buffer& operator=(const taken_buffer&) = delete;
    ~taken_buffer() {
        if (buffer_.words) {
            return_frame_buffer(buffer_, buffer_.capacity);
        }
    }
    capnp::word* words() const noexcept { return buffer_.words; }
    std::size_t capacity() const noexcept { return buffer_.capacity; }
    frame adopt(std::size_t used) {
        auto f = adopt_frame_buffer(buffer_, used);
        buffer_.words = nullptr;
        return f;
    }

private:
    frame_buffer buffer_;
};

// Words of a segment table for `segments` segments: their count, then each one's size, as
// 32-bit numbers, padded to a whole word.
constexpr std::size_t table_words(std::size_t segments) {
    return (segments + 2) / 2;
}

// A message builder whose first segment is a buffer of ours, left as it is when the builder
// goes (MallocMessageBuilder zeroes a first segment it was given, to be reused); further
// segments, should the message outgrow the first, are its own.
class in_place_builder final : public capnp::MessageBuilder {
public:
    explicit in_place_builder(kj::ArrayPtr<capnp::word> first) : first_(first) {}

    kj::ArrayPtr<capnp::word> allocateSegment(unsigned minimum) override {
        if (!first_given_ && first_.size() >= minimum) {
            first_given_ = true;
            return first_;
        }
        auto& more = more_.emplace_back(
            new capnp::word[std::max<std::size_t>(minimum, first_.size())]());  // zeroed
        return kj::arrayPtr(more.get(), std::max<std::size_t>(minimum, first_.size()));
    }

private:
    kj::ArrayPtr<capnp::word> first_;
    bool first_given_ = false;
    std::vector<std::unique_ptr<capnp::word[]>> more_;
};

// A message in one piece (a copy). The segment of bytes referred to (`referred`) ends where
// they end: the rest of its last word is zeros, never what lies past them.
frame flatten(kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments,
              std::span<const std::span<const std::byte>> referred);

// A message built by `build_with`: its head (segment table and first segment) if the
// message came out as planned, else the whole message flattened (a copy).
struct built {
    frame head;
    bool as_planned = false;
};

// Builds the message `fill` makes straight into the frame it is sent as: its first segment in
// a reused zeroed buffer, after room for the segment table, written in front of it at the
// end. So its bytes (a small tensor's) are copied into the message once, and not again into a
// flat array. The segments after the first must be the bytes `referred` (in order) that the
// frame refers to, which then follow the head. A message that outgrows the estimate (`bytes`)
// takes more segments and is flattened.
template <class Fill>
built build_with(std::size_t bytes, std::span<const std::span<const std::byte>> referred,
                 Fill&& fill) {
    const std::size_t table = table_words(1 + referred.size());
    taken_buffer buffer(table + bytes / 8 + 16);
    std::size_t used = 0;
    {
        in_place_builder builder(kj::arrayPtr(buffer.words() + table, buffer.capacity() - table));
        fill(builder);
        const auto segments = builder.getSegmentsForOutput();
        bool as_planned =
            segments.size() == 1 + referred.size() && segments[0].begin() == buffer.words() + table;
        for (std::size_t k = 0; as_planned && k < referred.size(); ++k) {
            as_planned = static_cast<const void*>(segments[k + 1].begin()) ==
                         static_cast<const void*>(referred[k].data());
        }
        if (!as_planned) {
            return {flatten(segments, referred), false};
        }
        static_assert(std::endian::native == std::endian::little);
        auto* sizes = reinterpret_cast<unsigned char*>(buffer.words());  // zeroed already
        const auto put = [&](std::size_t at, std::size_t value) {
            const auto v = static_cast<std::uint32_t>(value);
            std::memcpy(sizes + at * sizeof v, &v, sizeof v);
        };
        put(0, segments.size() - 1);
        for (std::size_t k = 0; k < segments.size(); ++k) {
            put(k + 1, segments[k].size());
        }
        used = table + segments[0].size();
    }
    return {buffer.adopt(used), true};
}

}  // namespace torchpool::wire
