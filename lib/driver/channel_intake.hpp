// What the host does with the bytes a worker sent on its channel: whole frames out of the
// frame reader, each decoded into a message, or the protocol error that ends the channel, in
// words for the caller of the task it breaks. Shared by the pool's driver and the fuzz target
// that feeds it hostile bytes (tests/fuzz/host_channel_fuzz.cpp).
#pragma once

#include "../wire/codec.hpp"
#include "../wire/frame_reader.hpp"
#include <torchpool/error.hpp>

#include <string>
#include <utility>

namespace torchpool::detail {

/// Takes every whole frame `reader` holds: `on_message(wire::message&&)` for each, or
/// `on_error(std::string what)` once for the first that is not a message (then false: the
/// stream can no longer be trusted, nothing more is read from it). `on_message` returns false
/// when the message itself broke the protocol (it reported it): the same end. Tensors placed
/// in shared memory are claimed from `space()`, asked again for each message (a hello may
/// bring it).
template <class Space, class OnMessage, class OnError>
bool take_messages(wire::frame_reader& reader, std::size_t max_frame_bytes, Space&& space,
                   OnMessage&& on_message, OnError&& on_error) {
    for (;;) {
        auto next = reader.next();
        if (next.error) {
            if (next.error == errc::frame_too_large) {
                on_error("sent a message of " + std::to_string(reader.rejected_frame_bytes()) +
                         " bytes, over the limit of " + std::to_string(max_frame_bytes) +
                         " bytes (pool_params::max_frame_bytes)");
            } else {
                on_error(std::string("sent bytes that are not a message (invalid segment table)"));
            }
            return false;
        }
        if (!next.has_frame()) {
            return true;
        }
        auto decoded = wire::decode(next.words, space());
        if (auto* bad = std::get_if<wire::decode_error>(&decoded)) {
            on_error("sent a malformed message: " + bad->what);
            return false;
        }
        if (!on_message(std::move(std::get<wire::message>(decoded)))) {
            return false;
        }
    }
}

}  // namespace torchpool::detail
