// One worker process as the driver holds it: its pidfd and output pipe (process_io) and its
// channel (worker_channel), read as they come until the process exits. The exit is told
// last, once no read is in flight and what the pipe and the channel still held has been
// taken, so that a reply sent just before a crash still counts and the last lines of its
// output are in the diagnostics. What it reads goes to an `events` sink (the pool; a
// recorder in tests/unit/driver/worker_link_test.cpp, which runs it on pipes and a socketpair).
#pragma once

#include "../core/types.hpp"
#include "../posix/clone.hpp"
#include "process_io.hpp"
#include "worker_channel.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/system/error_code.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace torchpool::detail {

class worker_link {
public:
    /// What a worker's link reads, told in order on the pool's executor.
    class events {
    public:
        /// The worker wrote to its stdout or stderr; `at_exit`: the last of it.
        virtual void output(core::slot_id slot, std::string_view bytes, bool at_exit) = 0;
        /// The channel's reader holds new bytes: take its whole frames. False if the stream
        /// can no longer be trusted (nothing more is read from it).
        virtual bool frames(core::slot_id slot, wire::frame_reader& reader) = 0;
        /// The worker broke the protocol in a way only the link sees (`what`, a verb phrase).
        virtual void protocol_error(core::slot_id slot, std::string what) = 0;
        /// The channel ended (`how`, in words) while the process may still run.
        virtual void channel_closed(core::slot_id slot, std::string how) = 0;
        /// The process was reaped, and everything it wrote and sent was taken.
        virtual void exited(core::slot_id slot, core::exit_status status) = 0;
        /// After each completion's events: the pool acts on them.
        virtual void settle() = 0;

    protected:
        ~events() = default;
    };

    worker_link(const boost::asio::any_io_executor& ex, core::slot_id slot,
                std::size_t max_frame_bytes, events& sink, process_ops ops = {})
        : slot_(slot), sink_(sink), process_(ex, ops), channel_(ex, max_frame_bytes) {}

    /// A new process in this slot: its descriptors, read from now on. `owner` is kept alive
    /// by every completion in flight.
    void adopt(int pid, posix::unique_fd pidfd, posix::unique_fd channel, posix::unique_fd log,
               const std::shared_ptr<void>& owner);

    bool alive() const noexcept { return process_.alive(); }
    int pid() const noexcept { return pid_; }
    void send(shared_frame frame, shared_fds fds = {}) {
        channel_.send(std::move(frame), std::move(fds));
    }
    void signal(int signo) { process_.signal(signo); }
    /// The worker's hello was taken: from now on no descriptor may come.
    void hello_taken() noexcept { greeted_ = true; }
    /// Descriptors that came with the messages read so far (a hello's output memory).
    std::size_t descriptors_waiting() const noexcept { return channel_.descriptors_waiting(); }
    posix::unique_fd take_descriptor() { return channel_.take_descriptor(); }
    /// Only for destructors (posix::kill_and_reap).
    int pidfd_if_alive() { return process_.pidfd_if_alive(); }

private:
    void read_channel(std::shared_ptr<void> keep);
    void on_channel_read(std::shared_ptr<void> keep, boost::system::error_code ec, std::size_t n);
    void take_frames();
    void channel_ended(boost::system::error_code ec);
    // Completes an exit once no read is in flight: what is left in the pipes, then the exit.
    void finish_exit_when_read();

    core::slot_id slot_;
    events& sink_;
    process_io process_;
    worker_channel channel_;
    int pid_ = 0;
    bool greeted_ = false;
};

}  // namespace torchpool::detail
