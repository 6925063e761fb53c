// Decoding (codec.hpp): one frame into a message, fully validated, never throwing; a request
// also as a view into the frame, for the worker SDK. And the check of a tensor's shape.
#include "capnp_values.hpp"
#include "codec.hpp"
#include "torchpool.capnp.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <limits>

namespace torchpool::wire {

namespace {

using values::to_string;

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
