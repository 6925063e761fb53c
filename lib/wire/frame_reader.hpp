// A sans-io reader of Cap'n Proto stream frames: feed it bytes, take whole frames out.
#pragma once

#include <torchpool/error.hpp>

#include <capnp/common.h>

#include <cstddef>
#include <memory>
#include <span>

namespace torchpool::wire {

/// Splits a byte stream into Cap'n Proto frames (segment table + segments) without
/// interpreting them. It checks the segment table only: a frame whose table is invalid or
/// announces more than `max_frame_bytes` is an error as soon as its header is in, before
/// its body has been received. Content is checked by `decode`.
///
/// Usage: write at most `prepare(n).size()` bytes into the span `prepare(n)` returns, then
/// `commit(written)`, then call `next()` until it returns no frame.
class frame_reader {
public:
    /// Most segments a frame may have. Our messages use one; Cap'n Proto's own reader
    /// refuses more than 512.
    static constexpr std::size_t max_segments = 512;

    explicit frame_reader(std::size_t max_frame_bytes);

    /// Space for at least `n` more bytes (may be more). Invalidates frames returned by
    /// `next()`.
    std::span<std::byte> prepare(std::size_t n);
    void commit(std::size_t n) noexcept { end_ += n; }

    /// Result of `next()`: a frame (non-empty `words`), nothing yet (empty, no error), or an
    /// error after which the stream cannot be trusted.
    struct result {
        std::span<const capnp::word> words;
        boost::system::error_code error;
        bool has_frame() const noexcept { return !words.empty(); }
    };

    /// The next whole frame, valid until the next call to `prepare`.
    result next();

    /// Called at end of stream: `errc::frame_truncated` if a partial frame is pending.
    boost::system::error_code finish() const noexcept;

    /// The bytes received and not yet taken as frames (the start of a partial frame).
    std::span<const std::byte> unconsumed() const noexcept {
        return {reinterpret_cast<const std::byte*>(buffer_.get()) + begin_, end_ - begin_};
    }
    /// Appends `bytes` as if received.
    void append(std::span<const std::byte> bytes);

    /// Size of the frame whose header was rejected, for error messages.
    std::size_t rejected_frame_bytes() const noexcept { return rejected_bytes_; }

private:
    std::byte* bytes() noexcept { return reinterpret_cast<std::byte*>(buffer_.get()); }

    std::size_t max_frame_bytes_;
    // Words, so that frames handed out are aligned as Cap'n Proto requires. Not a
    // std::vector: capnp::word is copyable only under GCC (Cap'n Proto 0.9.2), and growing
    // never needs to copy the bytes already taken as frames.
    std::unique_ptr<capnp::word[]> buffer_;
    std::size_t capacity_words_ = 0;
    std::size_t begin_ = 0;  // byte offset of the first unconsumed byte; a multiple of 8
    std::size_t end_ = 0;    // byte offset past the last received byte
    std::size_t rejected_bytes_ = 0;
};

}  // namespace torchpool::wire
