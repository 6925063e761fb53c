#include "inbox.hpp"

#include "../wire/codec.hpp"

#include <cerrno>
#include <span>

#include <sys/socket.h>

namespace torchpool::worker::detail {

channel_inbox::channel_inbox(int fd, const wire::frame_reader& main,
                             std::unordered_set<std::uint64_t>& cancelled,
                             std::size_t max_frame_bytes)
    : fd_(fd),
      main_(main),
      cancelled_(cancelled),
      max_frame_bytes_(max_frame_bytes),
      scan_(max_frame_bytes) {}

bool channel_inbox::requested(std::uint64_t id) {
    if (!cancelled_.contains(id)) {
        read_more();
    }
    return cancelled_.contains(id);
}

bool channel_inbox::hand_over(wire::frame_reader& main) {
    if (!scanning_) {
        return false;
    }
    main.append(std::as_bytes(std::span(pending_)));
    pending_.clear();
    scan_ = wire::frame_reader(max_frame_bytes_);
    scanning_ = false;
    broken_ = false;
    return true;
}

void channel_inbox::read_more() {
    if (!scanning_) {
        scan_.append(main_.unconsumed());
        scanning_ = true;
    }
    bool got = false;
    for (;;) {
        char chunk[16 * 1024];
        const ssize_t n = ::recv(fd_, chunk, sizeof chunk, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;  // nothing more now, or the end: the server loop will see it
        }
        pending_.insert(pending_.end(), chunk, chunk + n);
        scan_.append(std::as_bytes(std::span(chunk, static_cast<std::size_t>(n))));
        got = true;
    }
    while (got && !broken_) {
        auto next = scan_.next();
        if (next.error) {
            broken_ = true;  // the server loop reports it
            break;
        }
        if (!next.has_frame()) {
            break;
        }
        auto decoded = wire::decode_view(next.words);
        if (auto* msg = std::get_if<wire::message>(&decoded)) {
            if (auto* cancel = std::get_if<wire::cancel_msg>(msg)) {
                cancelled_.insert(cancel->id);
            }
        }
    }
}

}  // namespace torchpool::worker::detail
