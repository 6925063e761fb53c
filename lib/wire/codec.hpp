// Encoding and decoding of torchpool messages (Cap'n Proto, standard stream framing).
#pragma once

#include "messages.hpp"

#include <boost/container/small_vector.hpp>

#include <capnp/common.h>
#include <kj/array.h>

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <variant>

#include <sys/uio.h>

namespace torchpool::wire {

/// One whole frame, ready to be written to a stream.
using frame = kj::Array<capnp::word>;

frame encode(const hello_msg& m);
/// `inputs`: the pool's input memory (see encode_request).
frame encode(const request_msg& m, const void* inputs = nullptr);
/// `outputs`: the worker's output memory; tensors placed there are sent by reference.
frame encode(const reply_msg& m, const void* outputs = nullptr);
frame encode(const release_msg& m);
frame encode(const cancel_msg& m);
frame encode(const heartbeat_msg& m);
frame encode(const shutdown_msg& m);
frame encode(const fork_request_msg& m);
frame encode(const fork_reply_msg& m);
frame encode(const fault_msg& m);

/// Encodes `m` and hands the frame to `write` as byte ranges (segment table, then the
/// segments), without first copying it into one array. Returns what `write` returns.
bool encode_to(const reply_view& m, const std::function<bool(std::span<const iovec>)>& write);

/// A frame written from several places in one gathered write: its head (segment table and
/// first segment, in a reused buffer), then bytes it refers to where they are, each padded
/// to whole words. It owns what it refers to. Moving it keeps every piece where it is.
class gathered_frame {
public:
    gathered_frame() = default;
    /// A frame of one piece.
    explicit gathered_frame(frame whole);

    /// The pieces, in order; together, one standard Cap'n Proto stream frame.
    std::span<const iovec> pieces() const noexcept { return {pieces_.data(), pieces_.size()}; }
    /// Its bytes in all.
    std::size_t size() const noexcept { return size_; }
    /// The frame in one piece (a copy), for tests and tools.
    kj::Array<capnp::word> joined() const;

private:
    friend gathered_frame encode_request(std::uint64_t, std::uint64_t, request&, const void*);

    frame head_;
    std::vector<std::string> held_;  // tensor bytes the frame refers to
    boost::container::small_vector<iovec, 3> pieces_;
    std::size_t size_ = 0;
};

/// Tensors of the caller's own bytes of at least this size are not copied into a request's
/// frame: the frame takes them over and refers to them (a segment of their own).
inline constexpr std::size_t referenced_from_bytes = 1024;

/// Encodes a request straight from the caller's value. Tensors whose bytes are in `inputs`
/// (the pool's input memory, as `shared_region::space` names it) are sent by where they
/// are. Tensors of `referenced_from_bytes` or more of the caller's own bytes are moved out of
/// `req` into the frame, which refers to them; smaller ones are copied into it.
gathered_frame encode_request(std::uint64_t id, std::uint64_t deadline_ns, request& req,
                              const void* inputs = nullptr);

/// Why a frame could not be decoded, in words.
struct decode_error {
    std::string what;
};

/// Decodes and fully validates one frame (as returned by `frame_reader::next`): pointers
/// in bounds, tensors whose byte size matches their shape and type. Tensors placed in
/// shared memory are claimed from `space` (an error if there is none). Never throws.
std::variant<message, decode_error> decode(std::span<const capnp::word> words,
                                           shared_space* space = nullptr);

/// As `decode`, except that a request comes back as a view into `words` (no copy of its
/// payload or tensor bytes), valid as long as `words` is. For the worker SDK.
std::variant<message, request_view, decode_error> decode_view(std::span<const capnp::word> words,
                                                              shared_space* space = nullptr);

/// Checks a tensor's shape and byte size; empty when it is valid, else what is wrong.
std::string validate_tensor(dtype type, std::span<const std::int64_t> shape, std::size_t bytes);
inline std::string validate_tensor(const tensor& t) {
    return validate_tensor(t.type, t.shape, t.bytes().size());
}
inline std::string validate_tensor(const tensor_view& t) {
    return validate_tensor(t.type, t.shape, t.data.size());
}

}  // namespace torchpool::wire
