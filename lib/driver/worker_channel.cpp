#include "worker_channel.hpp"

#include <boost/asio/error.hpp>

#include <array>
#include <cerrno>
#include <span>
#include <string>

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
    received_.clear();
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
    received_.clear();  // closed: nobody will take them
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
        posix::receive_cuts cut;
        const ssize_t n = posix::receive_with_fds(socket_.native_handle(), space.data(),
                                                  space.size(), received_, cut);
        if (cut.descriptors || received_.size() > posix::max_passed_fds) {
            // Descriptors count against the pool's open files: a peer may not pile them up.
            ec = asio::error::message_size;
            return total;
        }
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
    if (ec == asio::error::message_size) {
        return "sent more than " + std::to_string(posix::max_passed_fds) +
               " file descriptors that no message took";
    }
    return "broke its channel (" + ec.message() + ")";
}

void worker_channel::start_write() {
    // Everything queued goes out in one gathered write, tried directly since the socket
    // almost always has room, which saves an asynchronous operation per task. A frame's
    // descriptors go with its first byte, so a gather ends before the next frame that has any.
    while (!writing_ && !outbox_.empty() && open_) {
        std::array<iovec, 256> iov;  // a frame has at most 129 pieces (encode_request)
        std::size_t count = 0;
        std::size_t offset = front_offset_;
        std::span<const int> fds;
        std::array<int, posix::max_passed_fds> fd_numbers;
        for (const auto& out : outbox_) {
            const auto pieces = out.frame->pieces();
            if (count > 0 &&
                (count + pieces.size() > iov.size() || (out.fds && !out.fds->empty()))) {
                break;
            }
            if (count == 0 && offset == 0 && out.fds && !out.fds->empty()) {
                const std::size_t n = std::min(out.fds->size(), fd_numbers.size());
                for (std::size_t i = 0; i < n; ++i) {
                    fd_numbers[i] = (*out.fds)[i].get();
                }
                fds = std::span<const int>(fd_numbers.data(), n);
            }
            for (const auto& piece : pieces) {
                if (offset >= piece.iov_len) {
                    offset -= piece.iov_len;  // written already
                    continue;
                }
                iov[count++] = {static_cast<char*>(piece.iov_base) + offset,
                                piece.iov_len - offset};
                offset = 0;
            }
        }
        const ssize_t sent = posix::send_with_fds(socket_.native_handle(), iov.data(), count, fds);
        if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            outbox_.clear();  // the worker closed its end; its exit will tell the story
            front_offset_ = 0;
            return;
        }
        if (sent <= 0) {
            break;  // no room: wait for it
        }
        consume_outbox(static_cast<std::size_t>(sent));
    }
    if (writing_ || outbox_.empty() || !open_) {
        return;
    }
    auto keep = owner_.lock();
    if (!keep) {
        return;  // the pool is going away
    }
    writing_ = true;
    socket_.async_wait(asio::socket_base::wait_write,
                       [this, keep = std::move(keep), gen = generation_](error_code ec) {
                           if (generation_ != gen) {
                               return;
                           }
                           writing_ = false;
                           if (ec) {
                               outbox_.clear();
                               front_offset_ = 0;
                               return;
                           }
                           start_write();
                       });
}

// Drops the first `n` bytes of the outbox, which have been written.
void worker_channel::consume_outbox(std::size_t n) {
    while (n > 0 && !outbox_.empty()) {
        const std::size_t left = outbox_.front().frame->size() - front_offset_;
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
