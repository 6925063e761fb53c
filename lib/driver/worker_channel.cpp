#include "worker_channel.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <cerrno>

#include <sys/socket.h>
#include <sys/uio.h>

namespace torchpool::detail {

namespace asio = boost::asio;
using boost::system::error_code;

void worker_channel::open(posix::unique_fd fd, std::weak_ptr<void> owner) {
    ++generation_;
    owner_ = std::move(owner);
    socket_.assign(asio::local::stream_protocol(), fd.release());
    open_ = true;
    reading_ = false;
    reader_ = wire::frame_reader(max_frame_bytes_);
    outbox_.clear();
    front_offset_ = 0;
    writing_ = false;
}

void worker_channel::close() {
    ++generation_;
    error_code ignored;
    socket_.close(ignored);
    open_ = false;
    reading_ = false;
    outbox_.clear();
    front_offset_ = 0;
    writing_ = false;
}

void worker_channel::cancel_read() {
    if (reading_) {
        error_code ignored;
        socket_.cancel(ignored);
    }
}

std::size_t worker_channel::read_available(error_code& ec) {
    std::size_t total = 0;
    for (;;) {
        auto space = reader_.prepare(64 * 1024);
        const ssize_t n = ::recv(socket_.native_handle(), space.data(), space.size(), 0);
        if (n > 0) {
            reader_.commit(static_cast<std::size_t>(n));
            total += static_cast<std::size_t>(n);
            if (static_cast<std::size_t>(n) < space.size()) {
                return total;  // a short read: the socket is drained for now
            }
        } else if (n == 0) {
            ec = asio::error::eof;
            return total;
        } else if (errno != EINTR) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                ec.assign(errno, boost::system::system_category());
            }
            return total;
        }
    }
}

std::optional<std::string> worker_channel::ended(error_code ec) {
    if (!open_) {
        return std::nullopt;
    }
    open_ = false;
    if (ec == asio::error::eof) {
        return reader_.finish() ? "closed its channel in the middle of a message"
                                : "closed its channel";
    }
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
        return std::nullopt;  // drained, still open; the process is gone anyway
    }
    return "broke its channel (" + ec.message() + ")";
}

void worker_channel::start_write() {
    if (writing_ || outbox_.empty() || !open_) {
        return;
    }
    // Everything queued goes out in one gathered write; first tried directly, since the
    // socket buffer almost always has room, which saves an asynchronous operation per task.
    gather_outbox();
    std::array<iovec, 64> iov;
    const std::size_t count = std::min(iov.size(), gather_.size());
    for (std::size_t i = 0; i < count; ++i) {
        iov[i] = {const_cast<void*>(gather_[i].data()), gather_[i].size()};
    }
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = count;
    ssize_t sent;
    do {
        sent = ::sendmsg(socket_.native_handle(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        outbox_.clear();  // the worker closed its end; its exit will tell the story
        front_offset_ = 0;
        return;
    }
    consume_outbox(sent < 0 ? 0 : static_cast<std::size_t>(sent));
    if (outbox_.empty()) {
        return;
    }
    auto keep = owner_.lock();
    if (!keep) {
        return;  // the pool is going away
    }
    writing_ = true;
    gather_outbox();
    asio::async_write(
        socket_, gather_,
        [this, keep = std::move(keep), gen = generation_](error_code ec, std::size_t n) {
            if (generation_ != gen) {
                return;
            }
            writing_ = false;
            if (ec) {
                outbox_.clear();
                front_offset_ = 0;
                return;
            }
            consume_outbox(n);
            start_write();
        });
}

// The unwritten bytes of the outbox, as one buffer sequence in gather_.
void worker_channel::gather_outbox() {
    gather_.clear();
    std::size_t offset = front_offset_;
    for (const auto& frame : outbox_) {
        auto bytes = frame->asBytes();
        gather_.emplace_back(bytes.begin() + offset, bytes.size() - offset);
        offset = 0;
    }
}

// Drops the first `n` bytes of the outbox, which have been written.
void worker_channel::consume_outbox(std::size_t n) {
    while (n > 0 && !outbox_.empty()) {
        const std::size_t left = outbox_.front()->asBytes().size() - front_offset_;
        if (n < left) {
            front_offset_ += n;
            return;
        }
        n -= left;
        outbox_.pop_front();
        front_offset_ = 0;
    }
}

}  // namespace torchpool::detail
