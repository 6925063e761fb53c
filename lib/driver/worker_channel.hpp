// A worker's channel, as the pool's driver sees it: a non-blocking Unix stream socket with
// Cap'n Proto frames both ways. Reads wait for readability and then take what the socket
// holds into a frame reader, so no bytes are ever held inside a pending read; writes go out
// directly when the socket has room (nearly always) and only otherwise once it has, every
// queued frame in one gathered write. A frame may carry descriptors (SCM_RIGHTS), sent with
// its first byte; descriptors that come in are kept, in order, for whoever decodes the frames.
#pragma once

#include "../posix/clone.hpp"
#include "../posix/fd_passing.hpp"
#include "../wire/codec.hpp"
#include "../wire/frame_reader.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace torchpool::detail {

using shared_frame = std::shared_ptr<const wire::gathered_frame>;
/// Descriptors sent with a frame; shared, like the frame, until every send of it is done.
using shared_fds = std::shared_ptr<const std::vector<posix::unique_fd>>;

inline shared_frame share_frame(wire::frame f) {
    return std::make_shared<const wire::gathered_frame>(std::move(f));
}
inline shared_frame share_frame(wire::gathered_frame f) {
    return std::make_shared<const wire::gathered_frame>(std::move(f));
}

class worker_channel {
public:
    worker_channel(const boost::asio::any_io_executor& ex, std::size_t max_frame_bytes)
        : socket_(ex), reader_(max_frame_bytes), max_frame_bytes_(max_frame_bytes) {}

    // A new process's channel: a fresh reader and an empty outbox. `owner` is kept alive
    // while a write waits for room.
    void open(posix::unique_fd fd, std::weak_ptr<void> owner);
    // The process is gone: pending completions find another generation.
    void close();
    // Open and trusted: nothing broke the stream.
    bool is_open() const noexcept { return open_; }
    // The stream can no longer be trusted; nothing more is read or written.
    void distrust() noexcept { open_ = false; }
    bool reading() const noexcept { return reading_; }
    // Lets a read wait in flight complete now (cancelled), with what it already holds.
    void cancel_read();
    wire::frame_reader& reader() noexcept { return reader_; }

    // Waits until the socket is readable, takes what it holds into the reader, then calls
    // `done(ec, n)`: n bytes were added, then ec happened (eof, an error, or aborted).
    // Asio re-arms the descriptor (EPOLL_CTL_MOD) for each wait, so data that arrives between
    // the last read and the wait is not missed, whichever thread runs the reactor.
    template <class Done>
    void read(std::shared_ptr<void> keep, Done done) {
        reading_ = true;
        socket_.async_wait(boost::asio::socket_base::wait_read,
                           [this, keep = std::move(keep), gen = generation_,
                            done](boost::system::error_code ec) mutable {
                               if (generation_ != gen) {
                                   return;
                               }
                               reading_ = false;
                               const std::size_t n = ec ? 0 : read_available(ec);
                               done(ec, n);
                           });
    }
    // What the socket holds now, into the reader, without blocking; `ec` becomes eof or the
    // error that ended it. Returns the bytes read. Descriptors that came with the bytes are
    // kept (take_descriptor); more than posix::max_passed_fds waiting ends the stream.
    std::size_t read_available(boost::system::error_code& ec);
    // Descriptors received and not yet taken, oldest first.
    std::size_t descriptors_waiting() const noexcept { return received_.size(); }
    posix::unique_fd take_descriptor() {
        posix::unique_fd fd = std::move(received_.front());
        received_.erase(received_.begin());  // rare, and few
        return fd;
    }
    // The stream ended with `ec`: how, in words ("closed its channel"), unless it had
    // ended already or is only drained for now. Either way nothing more is read.
    std::optional<std::string> ended(boost::system::error_code ec);

    // Queues a frame, with the descriptors it carries, and writes what the socket takes. A
    // frame is shared, not copied: a task sent ahead to a worker that dies is sent again
    // elsewhere.
    void send(shared_frame frame, shared_fds fds = {}) {
        outbox_.push_back({std::move(frame), std::move(fds)});
        start_write();
    }

private:
    struct outgoing {
        shared_frame frame;
        shared_fds fds;
    };

    void start_write();
    void consume_outbox(std::size_t n);

    boost::asio::local::stream_protocol::socket socket_;
    wire::frame_reader reader_;
    std::size_t max_frame_bytes_;
    std::weak_ptr<void> owner_;
    std::uint64_t generation_ = 0;  // one per process; stale completions compare it
    bool open_ = false;
    bool reading_ = false;
    std::deque<outgoing> outbox_;
    std::size_t front_offset_ = 0;  // bytes of the first frame already written
    bool writing_ = false;          // waiting for room in the socket
    std::vector<posix::unique_fd> received_;
};

}  // namespace torchpool::detail
