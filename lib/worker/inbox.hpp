// The worker SDK's view of the pool's channel while a handler runs: it reads what arrives
// without blocking, so that a cancel message reaches the running handler
// (worker::call::cancelled), and keeps the bytes for the server loop, which reads them once
// the handlers of its batch are done.
#pragma once

#include "../wire/frame_reader.hpp"
#include <torchpool/worker.hpp>

#include <cstddef>
#include <cstdint>
#include <unordered_set>
#include <vector>

namespace torchpool::worker::detail {

/// The bytes are scanned in a copy of the stream (from where the main reader stopped: a
/// partial frame the next bytes continue); the main reader's frames are views its handlers
/// still use, so it gets the bytes only through `hand_over`.
class channel_inbox final : public cancellation_source {
public:
    channel_inbox(int fd, const wire::frame_reader& main,
                  std::unordered_set<std::uint64_t>& cancelled, std::size_t max_frame_bytes);

    /// Reads what has arrived; true once a cancel message for `id` has.
    bool requested(std::uint64_t id) override;

    /// Gives what was read while handlers ran to the main reader; false if nothing was.
    bool hand_over(wire::frame_reader& main);

private:
    void read_more();

    int fd_;
    const wire::frame_reader& main_;
    std::unordered_set<std::uint64_t>& cancelled_;
    std::size_t max_frame_bytes_;
    wire::frame_reader scan_;
    std::vector<char> pending_;
    bool scanning_ = false;
    bool broken_ = false;
};

}  // namespace torchpool::worker::detail
