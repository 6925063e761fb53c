#include "frame_reader.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

namespace torchpool::wire {

namespace {

constexpr std::size_t word_bytes = sizeof(capnp::word);

std::uint32_t load_le32(const std::byte* p) noexcept {
    std::uint32_t v;
    std::memcpy(&v, p, sizeof v);
    if constexpr (std::endian::native == std::endian::big) {
        v = __builtin_bswap32(v);
    }
    return v;
}

}  // namespace

frame_reader::frame_reader(std::size_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {}

std::span<std::byte> frame_reader::prepare(std::size_t n) {
    const std::size_t capacity = capacity_words_ * word_bytes;
    if (begin_ == end_) {
        begin_ = end_ = 0;
    }
    if (capacity - end_ < n) {
        // Move the pending bytes to the front; frames start on word boundaries, so begin_
        // is a multiple of the word size and the move keeps them aligned.
        if (begin_ > 0) {
            std::memmove(bytes(), bytes() + begin_, end_ - begin_);
            end_ -= begin_;
            begin_ = 0;
        }
        if (capacity - end_ < n) {
            const std::size_t needed = end_ + n;
            const std::size_t words = std::max(needed / word_bytes + 1, capacity_words_ * 2);
            auto grown = std::make_unique_for_overwrite<capnp::word[]>(words);
            if (end_ > 0) {
                std::memcpy(grown.get(), buffer_.get(), end_);
            }
            buffer_ = std::move(grown);
            capacity_words_ = words;
        }
    }
    return {bytes() + end_, capacity_words_ * word_bytes - end_};
}

frame_reader::result frame_reader::next() {
    const std::size_t available = end_ - begin_;
    if (available < word_bytes) {
        return {};
    }
    const std::byte* head = bytes() + begin_;
    const std::uint64_t segment_count = std::uint64_t{load_le32(head)} + 1;
    if (segment_count > max_segments) {
        rejected_bytes_ = 0;
        return {{}, make_error_code(errc::frame_malformed)};
    }
    // Segment table: count, then one size per segment, padded to a whole word.
    const std::size_t table_bytes = ((4 + 4 * segment_count + 7) / 8) * 8;
    if (available < table_bytes) {
        return {};
    }
    std::uint64_t body_words = 0;
    for (std::uint64_t i = 0; i < segment_count; ++i) {
        body_words += load_le32(head + 4 + 4 * i);
    }
    const std::uint64_t frame_bytes = table_bytes + body_words * word_bytes;
    if (body_words == 0) {
        rejected_bytes_ = frame_bytes;
        return {{}, make_error_code(errc::frame_malformed)};
    }
    if (frame_bytes > max_frame_bytes_) {
        rejected_bytes_ = frame_bytes;
        return {{}, make_error_code(errc::frame_too_large)};
    }
    if (available < frame_bytes) {
        return {};
    }
    const auto* words = reinterpret_cast<const capnp::word*>(head);
    begin_ += frame_bytes;
    return {{words, frame_bytes / word_bytes}, {}};
}

boost::system::error_code frame_reader::finish() const noexcept {
    if (begin_ != end_) {
        return make_error_code(errc::frame_truncated);
    }
    return {};
}

void frame_reader::append(std::span<const std::byte> bytes) {
    if (bytes.empty()) {
        return;  // its data may be null, which memcpy must not get
    }
    auto space = prepare(bytes.size());
    std::memcpy(space.data(), bytes.data(), bytes.size());
    commit(bytes.size());
}

}  // namespace torchpool::wire
