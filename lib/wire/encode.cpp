// Encoding (codec.hpp): every message kind into a frame, built in place (frame_builder.hpp); a
// request into a gathered frame that refers to its caller's large tensors; a worker's reply
// straight into a gathered write.
#include "../shm/region.hpp"
#include "capnp_values.hpp"
#include "codec.hpp"
#include "frame_builder.hpp"
#include "torchpool.capnp.h"

#include <capnp/message.h>
#include <capnp/orphan.h>
#include <capnp/serialize.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <memory>
#include <utility>

namespace torchpool::wire {

namespace {

using values::bytes_of;
using values::data;
using values::text;

// Placed in shared memory, the bytes do not count toward a message's size.
std::size_t inline_size(const tensor& t, const void* space) {
    return detail::offset_in(t.shared, space) ? 0 : t.bytes().size();
}

std::size_t inline_size(const tensor_view& t, const void*) {
    return t.data.size();
}

// Tensors that `referred(i)` says the frame refers to get their bytes later, as a segment of
// their own.
constexpr auto none_referred = [](unsigned) { return false; };

// Each tensor's bytes go into the message, unless `locate(i)` places them in shared memory
// (then only where they are) or the frame refers to them.
template <class Tensors, class Locate, class Referred = decltype(none_referred)>
void set_tensors(capnp::List<schema::Tensor>::Builder out, const Tensors& in, Locate&& locate,
                 const Referred& referred = none_referred) {
    for (unsigned i = 0; i < in.size(); ++i) {
        auto t = out[i];
        t.setDtype(static_cast<schema::DType>(in[i].type));
        auto shape = t.initShape(static_cast<unsigned>(in[i].shape.size()));
        for (unsigned d = 0; d < in[i].shape.size(); ++d) {
            shape.set(d, in[i].shape[d]);
        }
        if (const std::optional<shared_ref> where = locate(i)) {
            auto shared = t.initShared();
            shared.setOffset(where->offset);
            shared.setLength(where->length);
        } else if (!referred(i)) {
            t.setData(data(bytes_of(in[i])));
        }
    }
}

void set_strings(capnp::List<capnp::Text>::Builder out, const std::vector<std::string>& in) {
    for (unsigned i = 0; i < in.size(); ++i) {
        out.set(i, text(in[i]));
    }
}

template <class Tensors>
std::size_t tensor_bytes(const Tensors& tensors, const void* space = nullptr) {
    std::size_t bytes = 0;
    for (const auto& t : tensors) {
        bytes += 48 + t.shape.size() * 8 + inline_size(t, space);
    }
    return bytes;
}

// Where a host's tensor is in `space`, if it is there.
auto locate_in(const std::vector<tensor>& tensors, const void* space) {
    return [&tensors, space](unsigned i) -> std::optional<shared_ref> {
        if (auto offset = detail::offset_in(tensors[i].shared, space)) {
            return shared_ref{*offset, tensors[i].shared.size()};
        }
        return std::nullopt;
    };
}

// Builds one message and passes the builder to `output`. A small one is built in a zeroed
// buffer on the stack, so that the only allocation is what `output` makes; a larger one in
// a first segment sized for it (`bytes` estimates its content) rather than Cap'n Proto's
// default 8 KiB.
template <class Fill, class Output>
auto with_message(std::size_t bytes, Fill&& fill, Output&& output) {
    constexpr std::size_t scratch_words = 128;
    const std::size_t words = bytes / 8 + 16;
    if (words <= scratch_words) {
        capnp::word scratch[scratch_words];
        std::memset(scratch, 0, sizeof scratch);
        capnp::MallocMessageBuilder builder(kj::arrayPtr(scratch, scratch_words));
        fill(builder.initRoot<schema::Envelope>());
        return output(builder);
    }
    capnp::MallocMessageBuilder builder(
        static_cast<unsigned>(std::min<std::size_t>(words, 1u << 28)));
    fill(builder.initRoot<schema::Envelope>());
    return output(builder);
}

template <class Fill>
frame build(std::size_t bytes, Fill&& fill) {
    return build_with(
               bytes, {},
               [&](capnp::MessageBuilder& builder) { fill(builder.initRoot<schema::Envelope>()); })
        .head;
}

frame encode_request(std::uint64_t id, std::uint64_t deadline_ns, const std::string& method,
                     const std::string& payload, const std::vector<tensor>& tensors,
                     const void* inputs) {
    return build(method.size() + payload.size() + tensor_bytes(tensors, inputs),
                 [&](schema::Envelope::Builder env) {
                     auto r = env.initRequest();
                     r.setId(id);
                     r.setMethod(text(method));
                     r.setDeadlineNs(deadline_ns);
                     r.setPayload(data(payload));
                     set_tensors(r.initTensors(static_cast<unsigned>(tensors.size())), tensors,
                                 locate_in(tensors, inputs));
                 });
}

template <class Reply>
std::size_t reply_bytes(const Reply& m) {
    std::size_t bytes =
        m.error_type.size() + m.error_message.size() + m.payload.size() + tensor_bytes(m.tensors);
    if constexpr (std::is_same_v<Reply, reply_view>) {
        // Tensors placed in output memory take a few words, not their bytes, in the message.
        for (std::size_t i = 0; i < m.placed.size() && i < m.tensors.size(); ++i) {
            if (m.placed[i]) {
                bytes -= m.tensors[i].data.size();
            }
        }
    }
    return bytes;
}

template <class Reply, class Locate, class Referred = decltype(none_referred)>
void fill_reply(schema::Envelope::Builder env, const Reply& m, Locate&& locate,
                const Referred& referred = none_referred) {
    auto r = env.initReply();
    r.setId(m.id);
    if (m.ok) {
        r.initResult().setOk();
    } else {
        auto e = r.initResult().initError();
        e.setType(text(m.error_type));
        e.setMessage(text(m.error_message));
    }
    r.setPayload(data(m.payload));
    set_tensors(r.initTensors(static_cast<unsigned>(m.tensors.size())), m.tensors, locate,
                referred);
}

// A reply view's tensors are placed where `placed` says (all inline when it is empty).
auto locate_in(const reply_view& m) {
    return [&m](unsigned i) -> std::optional<shared_ref> {
        return i < m.placed.size() ? m.placed[i] : std::nullopt;
    };
}

}  // namespace

frame encode(const hello_msg& m) {
    return build(256, [&](schema::Envelope::Builder env) {
        auto h = env.initHello();
        h.setPid(m.pid);
        h.setProtocolVersion(m.protocol_version);
        set_strings(h.initCapabilities(static_cast<unsigned>(m.capabilities.size())),
                    m.capabilities);
        set_strings(h.initMethods(static_cast<unsigned>(m.methods.size())), m.methods);
    });
}

frame encode(const request_msg& m, const void* inputs) {
    return encode_request(m.id, m.deadline_ns, m.method, m.payload, m.tensors, inputs);
}

gathered_frame::gathered_frame(frame whole) : head_(std::move(whole)) {
    const auto bytes = head_.asBytes();
    pieces_.push_back(iovec{const_cast<kj::byte*>(bytes.begin()), bytes.size()});
    size_ = bytes.size();
}

kj::Array<capnp::word> gathered_frame::joined() const {
    auto out = kj::heapArray<capnp::word>(size_ / sizeof(capnp::word));
    auto* at = reinterpret_cast<std::byte*>(out.begin());
    for (const auto& piece : pieces_) {
        std::memcpy(at, piece.iov_base, piece.iov_len);
        at += piece.iov_len;
    }
    return out;
}

gathered_frame encode_request(std::uint64_t id, std::uint64_t deadline_ns, request& req,
                              const void* inputs) {
    // Referred to: a caller's own bytes, large, word-aligned (as a std::string's heap buffer
    // is), and few enough for the segment limit of a reader (and for the table above). They
    // move into the frame first (reserved: they stay where they are), and the message refers
    // to them there.
    constexpr std::size_t most_referred = 64;
    gathered_frame out;
    boost::container::small_vector<bool, 8> refers(req.tensors.size(), false);
    std::size_t count = 0;
    std::size_t bytes = req.method.size() + req.payload.size();
    for (std::size_t i = 0; i < req.tensors.size(); ++i) {
        const auto& t = req.tensors[i];
        bytes += 48 + t.shape.size() * 8;
        if (!t.shared && t.data.size() >= referenced_from_bytes &&
            reinterpret_cast<std::uintptr_t>(t.data.data()) % sizeof(capnp::word) == 0 &&
            count < most_referred) {
            refers[i] = true;
            ++count;
        } else {
            bytes += inline_size(t, inputs);
        }
    }
    boost::container::small_vector<std::span<const std::byte>, 4> referred;
    out.held_.reserve(count);
    for (std::size_t i = 0; i < req.tensors.size(); ++i) {
        if (refers[i]) {
            const auto& held = out.held_.emplace_back(std::move(req.tensors[i].data));
            req.tensors[i].data.clear();
            referred.push_back(std::as_bytes(std::span(held.data(), held.size())));
        }
    }
    auto made = build_with(bytes, referred, [&](capnp::MessageBuilder& builder) {
        auto r = builder.initRoot<schema::Envelope>().initRequest();
        r.setId(id);
        r.setMethod(text(req.method));
        r.setDeadlineNs(deadline_ns);
        r.setPayload(data(std::as_const(req.payload)));  // not std::data
        auto list = r.initTensors(static_cast<unsigned>(req.tensors.size()));
        set_tensors(list, req.tensors, locate_in(req.tensors, inputs),
                    [&](unsigned i) { return refers[i]; });
        auto orphanage = builder.getOrphanage();
        for (unsigned i = 0, k = 0; i < req.tensors.size(); ++i) {
            if (refers[i]) {
                list[i].adoptData(orphanage.referenceExternalData(data(referred[k++])));
            }
        }
    });
    out.head_ = std::move(made.head);
    const auto head = out.head_.asBytes();
    out.pieces_.push_back(iovec{const_cast<kj::byte*>(head.begin()), head.size()});
    out.size_ = head.size();
    if (!made.as_planned) {
        out.held_.clear();  // flattened: the bytes are in the head
        return out;
    }
    static constexpr capnp::word zeros{};
    for (const auto& held : out.held_) {
        out.pieces_.push_back(iovec{const_cast<char*>(held.data()), held.size()});
        if (const std::size_t tail = held.size() % sizeof(capnp::word)) {
            out.pieces_.push_back(
                iovec{const_cast<capnp::word*>(&zeros), sizeof(capnp::word) - tail});
        }
        out.size_ +=
            (held.size() + sizeof(capnp::word) - 1) / sizeof(capnp::word) * sizeof(capnp::word);
    }
    return out;
}

frame encode(const reply_msg& m, const void* outputs) {
    return build(reply_bytes(m), [&](schema::Envelope::Builder env) {
        fill_reply(env, m, locate_in(m.tensors, outputs));
    });
}

frame encode(const release_msg& m) {
    return build(m.offsets.size() * 8, [&](schema::Envelope::Builder env) {
        auto offsets = env.initRelease().initOffsets(static_cast<unsigned>(m.offsets.size()));
        for (unsigned i = 0; i < m.offsets.size(); ++i) {
            offsets.set(i, m.offsets[i]);
        }
    });
}

bool encode_to(const reply_view& m, const std::function<bool(std::span<const iovec>)>& write) {
    // Large inline results are written from where the handler left them (word-aligned, as
    // LibTorch's are): a segment each, padded with zeros; the rest is built on the stack.
    constexpr std::size_t most_referred = 64;
    boost::container::small_vector<bool, 8> refers(m.tensors.size(), false);
    boost::container::small_vector<std::span<const std::byte>, 4> referred;
    std::size_t bytes = reply_bytes(m);
    for (std::size_t i = 0; i < m.tensors.size(); ++i) {
        const auto data = m.tensors[i].data;
        const bool placed = i < m.placed.size() && m.placed[i];
        if (!placed && data.size() >= referenced_from_bytes &&
            reinterpret_cast<std::uintptr_t>(data.data()) % sizeof(capnp::word) == 0 &&
            referred.size() < most_referred) {
            refers[i] = true;
            referred.push_back(data);
            bytes -= data.size();
        }
    }
    return with_message(
        bytes,
        [&](schema::Envelope::Builder env) {
            fill_reply(env, m, locate_in(m), [&](unsigned i) { return refers[i]; });
            if (referred.empty()) {
                return;
            }
            auto list = env.getReply().getTensors();
            auto orphanage = capnp::Orphanage::getForMessageContaining(env);
            for (unsigned i = 0, k = 0; i < m.tensors.size(); ++i) {
                if (refers[i]) {
                    list[i].adoptData(orphanage.referenceExternalData(data(referred[k++])));
                }
            }
        },
        [&](capnp::MallocMessageBuilder& builder) {
            auto segments = builder.getSegmentsForOutput();
            constexpr std::size_t max_segments = 1 + most_referred + 15;
            if (segments.size() > max_segments) {
                auto flat = flatten(segments, referred);
                const iovec whole{flat.asBytes().begin(), flat.asBytes().size()};
                return write({&whole, 1});
            }
            // Segment table: count - 1, then each size in words, padded to a whole word.
            static_assert(std::endian::native == std::endian::little);
            std::uint32_t table[max_segments + 1];
            table[0] = static_cast<std::uint32_t>(segments.size() - 1);
            for (std::size_t i = 0; i < segments.size(); ++i) {
                table[i + 1] = static_cast<std::uint32_t>(segments[i].size());
            }
            if (segments.size() % 2 == 0) {
                table[segments.size() + 1] = 0;
            }
            static constexpr capnp::word zeros{};
            iovec parts[1 + 2 * max_segments];
            std::size_t n = 0;
            parts[n++] = {table, (segments.size() / 2 + 1) * 8};
            for (std::size_t i = 0, k = 0; i < segments.size(); ++i) {
                auto* begin = const_cast<capnp::word*>(segments[i].begin());
                if (k < referred.size() && static_cast<const void*>(begin) == referred[k].data()) {
                    // A referred tensor's segment ends in the bytes after it: zeros instead.
                    const std::size_t length = referred[k++].size();
                    parts[n++] = {begin, length};
                    if (const std::size_t tail = length % sizeof(capnp::word)) {
                        parts[n++] = {const_cast<capnp::word*>(&zeros), sizeof(capnp::word) - tail};
                    }
                    continue;
                }
                parts[n++] = {begin, segments[i].size() * sizeof(capnp::word)};
            }
            return write({parts, n});
        });
}

frame encode(const fault_msg& m) {
    return build(0, [&](schema::Envelope::Builder env) {
        auto f = env.initFault();
        f.setTaskId(m.task_id);
        f.setKind(static_cast<std::uint8_t>(m.what.what));
        f.setValue(m.what.value);
    });
}

frame encode(const cancel_msg& m) {
    return build(0, [&](schema::Envelope::Builder env) { env.initCancel().setId(m.id); });
}

frame encode(const heartbeat_msg& m) {
    return build(
        0, [&](schema::Envelope::Builder env) { env.initHeartbeat().setSequence(m.sequence); });
}

frame encode(const fork_request_msg& m) {
    return build(0, [&](schema::Envelope::Builder env) {
        auto r = env.initForkRequest();
        r.setSequence(m.sequence);
        r.setSlot(m.slot);
    });
}

frame encode(const fork_reply_msg& m) {
    return build(m.error.size(), [&](schema::Envelope::Builder env) {
        auto r = env.initForkReply();
        r.setSequence(m.sequence);
        r.setPid(m.pid);
        r.setError(text(m.error));
        r.setHelper(m.helper);
    });
}

frame encode(const shutdown_msg&) {
    return build(0, [](schema::Envelope::Builder env) { env.initShutdown(); });
}

}  // namespace torchpool::wire
