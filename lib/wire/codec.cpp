#include "codec.hpp"

#include "frame_buffers.hpp"

#include "../shm/region.hpp"
#include "torchpool.capnp.h"

#include <capnp/message.h>
#include <capnp/orphan.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <memory>

namespace torchpool::wire {

namespace {

capnp::Text::Reader text(const std::string& s) {
    return {s.c_str(), s.size()};
}

capnp::Data::Reader data(const std::string& s) {
    return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

std::string to_string(capnp::Text::Reader t) {
    return {t.begin(), t.size()};
}

std::string to_string(capnp::Data::Reader d) {
    return {reinterpret_cast<const char*>(d.begin()), d.size()};
}

capnp::Data::Reader data(std::span<const std::byte> bytes) {
    return {reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size()};
}

capnp::Data::Reader data(std::string_view s) {
    return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

capnp::Text::Reader text(std::string_view s) {
    return {s.data(), s.size()};
}

std::span<const std::byte> bytes_of(const tensor& t) {
    return t.bytes();
}

std::span<const std::byte> bytes_of(const tensor_view& t) {
    return t.data;
}

// Placed in shared memory, the bytes do not count toward a message's size.
std::size_t inline_size(const tensor& t, const void* space) {
    return detail::offset_in(t.shared, space) ? 0 : t.bytes().size();
}

std::size_t inline_size(const tensor_view& t, const void*) {
    return t.data.size();
}

// Each tensor's bytes go into the message, unless `locate(i)` places them in shared memory:
// then only where they are.
// Tensors that `referred(i)` says the frame refers to get their bytes later, as a segment of
// their own.
constexpr auto none_referred = [](unsigned) { return false; };

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

// Throws decode_error for a tensor that does not describe itself consistently.
struct invalid_message {
    std::string what;
};

// Tensor (owning: inline bytes are copied) or tensor_view (a view into the message). Bytes
// in shared memory are claimed from `space`, which checks where they are.
template <class Tensor>
std::vector<Tensor> get_tensors(capnp::List<schema::Tensor>::Reader in, shared_space* space) {
    std::vector<Tensor> out;
    out.reserve(in.size());
    for (unsigned i = 0; i < in.size(); ++i) {
        auto t = in[i];
        const auto raw_type = static_cast<unsigned>(t.getDtype());
        if (raw_type > static_cast<unsigned>(dtype::boolean)) {
            throw invalid_message{"tensor " + std::to_string(i) + " has unknown dtype " +
                                  std::to_string(raw_type)};
        }
        Tensor value;
        value.type = static_cast<dtype>(raw_type);
        for (auto d : t.getShape()) {
            value.shape.push_back(d);
        }
        if (t.which() == schema::Tensor::SHARED) {
            if (space == nullptr) {
                throw invalid_message{"tensor " + std::to_string(i) +
                                      " is placed in shared memory, but there is none here"};
            }
            const auto where = t.getShared();
            auto claimed = space->claim({where.getOffset(), where.getLength()});
            if (auto* problem = std::get_if<std::string>(&claimed)) {
                throw invalid_message{"tensor " + std::to_string(i) + ": " + *problem};
            }
            auto& bytes = std::get<shared_bytes>(claimed);
            if constexpr (std::is_same_v<Tensor, tensor>) {
                value.shared = std::move(bytes);
            } else {
                value.data = bytes.bytes();
                value.owner = bytes.region();
            }
        } else if (t.which() == schema::Tensor::DATA) {
            const auto bytes = t.getData();
            if constexpr (std::is_same_v<Tensor, tensor>) {
                value.data = to_string(bytes);
            } else {
                value.data = std::as_bytes(std::span(bytes.begin(), bytes.size()));
            }
        } else {
            throw invalid_message{"tensor " + std::to_string(i) +
                                  " has its bytes in an unknown kind of place"};
        }
        if (auto problem = validate_tensor(value); !problem.empty()) {
            throw invalid_message{"tensor " + std::to_string(i) + ": " + problem};
        }
        out.push_back(std::move(value));
    }
    return out;
}

std::vector<std::string> get_strings(capnp::List<capnp::Text>::Reader in) {
    std::vector<std::string> out;
    out.reserve(in.size());
    for (auto s : in) {
        out.push_back(to_string(s));
    }
    return out;
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
              std::span<const std::span<const std::byte>> referred) {
    const std::size_t table = table_words(segments.size());
    std::size_t words = table;
    for (const auto& segment : segments) {
        words += segment.size();
    }
    auto out = kj::heapArray<capnp::word>(words);
    auto* const start = reinterpret_cast<unsigned char*>(out.begin());
    std::memset(start, 0, words * sizeof(capnp::word));
    const auto put = [start](std::size_t index, std::size_t value) {
        const auto v = static_cast<std::uint32_t>(value);
        std::memcpy(start + index * sizeof v, &v, sizeof v);
    };
    put(0, segments.size() - 1);
    auto* at = start + table * sizeof(capnp::word);
    for (std::size_t i = 0; i < segments.size(); ++i) {
        put(i + 1, segments[i].size());
        std::size_t length = segments[i].size() * sizeof(capnp::word);
        for (const auto& r : referred) {
            if (static_cast<const void*>(r.data()) == segments[i].begin()) {
                length = r.size();
            }
        }
        std::memcpy(at, segments[i].begin(), length);
        at += segments[i].size() * sizeof(capnp::word);
    }
    return out;
}

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
        in_place_builder builder(
            kj::arrayPtr(buffer.words() + table, buffer.capacity() - table));
        fill(builder);
        const auto segments = builder.getSegmentsForOutput();
        bool as_planned = segments.size() == 1 + referred.size() &&
                          segments[0].begin() == buffer.words() + table;
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

template <class Fill>
frame build(std::size_t bytes, Fill&& fill) {
    return build_with(bytes, {}, [&](capnp::MessageBuilder& builder) {
               fill(builder.initRoot<schema::Envelope>());
           }).head;
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

std::string validate_tensor(dtype type, std::span<const std::int64_t> dims, std::size_t bytes) {
    std::uint64_t elements = 1;
    for (auto d : dims) {
        if (d < 0) {
            return "negative dimension " + std::to_string(d) + " in its shape";
        }
        if (d != 0 &&
            elements > std::numeric_limits<std::uint64_t>::max() / static_cast<std::uint64_t>(d)) {
            return "its shape has more elements than can be addressed";
        }
        elements *= static_cast<std::uint64_t>(d);
    }
    const std::uint64_t size = element_size(type);
    if (elements > std::numeric_limits<std::uint64_t>::max() / size || elements * size != bytes) {
        std::string shape = "[";
        for (std::size_t i = 0; i < dims.size(); ++i) {
            if (i > 0) {
                shape += ',';
            }
            shape += std::to_string(dims[i]);
        }
        shape += ']';
        return "has " + std::to_string(bytes) + " bytes of data, but shape " + shape + " of " +
               dtype_name(type) + " needs " + std::to_string(elements * size);
    }
    return {};
}

const char* message_name(const message& m) noexcept {
    constexpr const char* names[] = {"hello",     "request",  "reply",        "cancel",
                                     "heartbeat", "shutdown", "fork request", "fork reply",
                                     "fault",     "release"};
    return names[m.index()];
}

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
        out.size_ += (held.size() + sizeof(capnp::word) - 1) / sizeof(capnp::word) *
                     sizeof(capnp::word);
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

namespace {

template <class Result>
Result decode_as(std::span<const capnp::word> words, bool request_as_view, shared_space* space) {
    try {
        capnp::ReaderOptions options;
        // Each word of a legitimate message is visited once; the margin covers the root.
        options.traversalLimitInWords = words.size() * 2 + 64;
        capnp::FlatArrayMessageReader reader(
            kj::ArrayPtr<const capnp::word>(words.data(), words.size()), options);
        auto env = reader.getRoot<schema::Envelope>();
        if constexpr (std::is_constructible_v<Result, request_view>) {
            if (request_as_view && env.which() == schema::Envelope::REQUEST) {
                // Readers point into `words`, which outlive them; so do the views.
                auto r = env.getRequest();
                auto method = r.getMethod();
                auto payload = r.getPayload();
                return request_view{r.getId(), std::string_view(method.begin(), method.size()),
                                    r.getDeadlineNs(),
                                    std::string_view(reinterpret_cast<const char*>(payload.begin()),
                                                     payload.size()),
                                    get_tensors<tensor_view>(r.getTensors(), space)};
            }
        }
        switch (env.which()) {
            case schema::Envelope::HELLO: {
                auto h = env.getHello();
                return message{hello_msg{h.getPid(), h.getProtocolVersion(),
                                         get_strings(h.getCapabilities()),
                                         get_strings(h.getMethods())}};
            }
            case schema::Envelope::REQUEST: {
                auto r = env.getRequest();
                return message{request_msg{r.getId(), to_string(r.getMethod()), r.getDeadlineNs(),
                                           to_string(r.getPayload()),
                                           get_tensors<tensor>(r.getTensors(), space)}};
            }
            case schema::Envelope::REPLY: {
                auto r = env.getReply();
                reply_msg m{.id = r.getId()};
                auto result = r.getResult();
                switch (result.which()) {
                    case schema::Reply::Result::OK:
                        break;
                    case schema::Reply::Result::ERROR:
                        m.ok = false;
                        m.error_type = to_string(result.getError().getType());
                        m.error_message = to_string(result.getError().getMessage());
                        break;
                    default:
                        return decode_error{"reply has an unknown result kind"};
                }
                m.payload = to_string(r.getPayload());
                m.tensors = get_tensors<tensor>(r.getTensors(), space);
                return message{std::move(m)};
            }
            case schema::Envelope::CANCEL:
                return message{cancel_msg{env.getCancel().getId()}};
            case schema::Envelope::HEARTBEAT:
                return message{heartbeat_msg{env.getHeartbeat().getSequence()}};
            case schema::Envelope::SHUTDOWN:
                return message{shutdown_msg{}};
            case schema::Envelope::FORK_REQUEST: {
                auto r = env.getForkRequest();
                return message{fork_request_msg{r.getSequence(), r.getSlot()}};
            }
            case schema::Envelope::FAULT: {
                auto f = env.getFault();
                if (f.getKind() > static_cast<std::uint8_t>(fault::kind::fail)) {
                    return decode_error{"fault has an unknown kind " + std::to_string(f.getKind())};
                }
                return message{fault_msg{f.getTaskId(),
                                         {static_cast<fault::kind>(f.getKind()), f.getValue()}}};
            }
            case schema::Envelope::RELEASE: {
                release_msg m;
                for (auto offset : env.getRelease().getOffsets()) {
                    m.offsets.push_back(offset);
                }
                return message{std::move(m)};
            }
            case schema::Envelope::FORK_REPLY: {
                auto r = env.getForkReply();
                return message{fork_reply_msg{r.getSequence(), r.getPid(), to_string(r.getError()),
                                              r.getHelper()}};
            }
        }
        return decode_error{"unknown message kind " +
                            std::to_string(static_cast<unsigned>(env.which()))};
    } catch (const invalid_message& e) {
        return decode_error{e.what};
    } catch (const kj::Exception& e) {
        return decode_error{std::string("not a valid Cap'n Proto message: ") +
                            e.getDescription().cStr()};
    }
}

}  // namespace

std::variant<message, decode_error> decode(std::span<const capnp::word> words,
                                           shared_space* space) {
    return decode_as<std::variant<message, decode_error>>(words, false, space);
}

std::variant<message, request_view, decode_error> decode_view(std::span<const capnp::word> words,
                                                              shared_space* space) {
    return decode_as<std::variant<message, request_view, decode_error>>(words, true, space);
}

}  // namespace torchpool::wire
