// A request's body as the server reads it (a Beast Body): text, except that the binary data of
// an infer request (Triton's binary tensor extension: the bytes after the JSON header) can be
// read straight into the model's input memory, where the workers read it. Its tensors are then
// views of that memory, and a request that runs alone reaches its worker with no copy after
// the socket's.
#pragma once

#include <torchpool/task.hpp>

#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/optional.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

namespace torchpool::serve {

struct request_body {
    struct value_type {
        /// The body, or with `binary` its first `text_bytes` (the JSON header) only.
        std::string text;
        /// Where the bytes after `text_bytes` go, exactly as many of them as it holds. Set
        /// (by the session, from the head) before the body is read; reset once it is read if
        /// the body was not that long after all: then `text` holds the whole body.
        shared_bytes binary;
        std::size_t text_bytes = 0;
    };

    class reader {
    public:
        template <bool isRequest, class Fields>
        reader(boost::beast::http::header<isRequest, Fields>&, value_type& body) : body_(body) {}

        void init(const boost::optional<std::uint64_t>& length, boost::beast::error_code& ec) {
            ec = {};
            if (body_.binary && (!body_.binary.writable() || !length ||
                                 *length != body_.text_bytes + body_.binary.size())) {
                body_.binary = {};  // not the body the head announced: all of it as text
            }
            if (length && *length <= body_.text.max_size()) {
                body_.text.reserve(body_.binary ? body_.text_bytes
                                                : static_cast<std::size_t>(*length));
            }
        }

        template <class ConstBufferSequence>
        std::size_t put(const ConstBufferSequence& buffers, boost::beast::error_code& ec) {
            ec = {};
            std::size_t taken = 0;
            for (const auto b : boost::beast::buffers_range_ref(buffers)) {
                const auto* bytes = static_cast<const char*>(b.data());
                std::size_t n = b.size();
                if (body_.binary && received_ < body_.text_bytes) {
                    const std::size_t head = std::min(n, body_.text_bytes - received_);
                    body_.text.append(bytes, head);
                    bytes += head;
                    n -= head;
                    received_ += head;
                    taken += head;
                }
                if (n == 0) {
                    continue;
                }
                if (!body_.binary) {
                    body_.text.append(bytes, n);
                } else {
                    // init checked its length against Content-Length, which the parser holds
                    // the body to; checked again all the same, as the bytes are a peer's.
                    if (received_ - body_.text_bytes + n > body_.binary.size()) {
                        ec = boost::beast::http::error::body_limit;
                        return taken;
                    }
                    std::memcpy(body_.binary.writable_bytes().data() + received_ - body_.text_bytes,
                                bytes, n);
                }
                received_ += n;
                taken += n;
            }
            return taken;
        }

        void finish(boost::beast::error_code& ec) { ec = {}; }

    private:
        value_type& body_;
        std::size_t received_ = 0;
    };
};

}  // namespace torchpool::serve
