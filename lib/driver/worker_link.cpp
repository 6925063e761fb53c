#include "worker_link.hpp"

#include "../core/wording.hpp"

#include <boost/asio/error.hpp>

namespace torchpool::detail {

namespace asio = boost::asio;
using boost::system::error_code;

void worker_link::adopt(int pid, posix::unique_fd pidfd, posix::unique_fd channel,
                        posix::unique_fd log, const std::shared_ptr<void>& owner) {
    pid_ = pid;
    greeted_ = false;
    process_.take(pidfd.release(), log.release());
    channel_.open(std::move(channel), owner);
    process_.watch_exit(owner, [this] {
        // A channel wait may have completed with data whose handler has not run yet: let it
        // run first (cancelled), then drain what is left, so that a reply sent just before
        // the exit still counts.
        channel_.cancel_read();
        finish_exit_when_read();
        sink_.settle();
    });
    read_channel(owner);
    process_.read_output(
        owner, [this](std::string_view bytes) { sink_.output(slot_, bytes, false); },
        [this] {
            finish_exit_when_read();
            sink_.settle();
        });
}

// Flattened: it runs once per message, and the channel's read template is its only callee.
[[gnu::flatten]] void worker_link::read_channel(std::shared_ptr<void> keep) {
    channel_.read(keep, [this, keep](error_code ec, std::size_t n) mutable {
        on_channel_read(std::move(keep), ec, n);
    });
}

inline void worker_link::on_channel_read(std::shared_ptr<void> keep, error_code ec, std::size_t n) {
    if (n > 0) {
        take_frames();
    }
    if (ec && ec != asio::error::operation_aborted) {
        channel_ended(ec);
    } else if (!ec && channel_.is_open() && !process_.exit()) {
        read_channel(std::move(keep));
    }
    finish_exit_when_read();
    sink_.settle();
}

inline void worker_link::take_frames() {
    if (!sink_.frames(slot_, channel_.reader())) {
        channel_.distrust();
    }
    if (channel_.descriptors_waiting() > 0 && channel_.is_open() &&
        (greeted_ || channel_.reader().unconsumed().empty())) {
        // Only a hello carries a descriptor, taken with it; others would only pile up. (Before
        // the hello, with part of a frame still to come, they may be the hello's.)
        sink_.protocol_error(slot_, core::sent_descriptors());
        channel_.distrust();
    }
}

void worker_link::channel_ended(error_code ec) {
    if (auto how = channel_.ended(ec)) {
        sink_.channel_closed(slot_, std::move(*how));
    }
}

void worker_link::finish_exit_when_read() {
    if (!process_.exit() || channel_.reading() || process_.reading_output()) {
        return;
    }
    process_.drain_output([this](std::string_view bytes) { sink_.output(slot_, bytes, false); });
    sink_.output(slot_, {}, true);
    if (channel_.is_open()) {
        // At exit, with no read in flight: what the channel still holds.
        error_code ec;
        if (channel_.read_available(ec) > 0) {
            take_frames();
        }
        if (ec) {
            channel_ended(ec);
        }
    }
    const auto status = *process_.exit();
    process_.retire();
    channel_.close();
    sink_.exited(slot_, status);
}

}  // namespace torchpool::detail
