// The pool's end of the fork server's protocol: its process (pidfd, output), and its control
// socket (SOCK_SEQPACKET, one Cap'n Proto message per packet), on which the pool asks for
// workers by sequence number and the server, its helpers and each new worker answer, with
// descriptors passed by SCM_RIGHTS. The socket is read on to its end, even after the server
// exited: a worker made just before the exit still hands itself over.
#pragma once

#include "../core/types.hpp"
#include "../posix/process.hpp"
#include "../wire/messages.hpp"
#include "../wire/transport.hpp"
#include "process_io.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

namespace torchpool::detail {

/// One packet from the control socket, decoded with the descriptors it carried
/// (wire/transport.hpp), or what was wrong with it.
using server_packet = wire::from_fork_server;

/// Reads every packet the fork server's control socket (SOCK_SEQPACKET, non-blocking reads)
/// holds into `out`. False at end of stream or after a packet that breaks the protocol,
/// which is the last one in `out` (a fork_server_violation).
bool read_server_packets(int socket, std::vector<server_packet>& out);

class fork_server_link {
public:
    explicit fork_server_link(const boost::asio::any_io_executor& ex)
        : process_(ex), control_(ex) {}

    process_io& process() noexcept { return process_; }

    // A new fork server process: its pidfd and output, and its control socket.
    void open(posix::spawned_process& p);
    // Its exit is complete: every descriptor closed, every request forgotten.
    void close();
    // Until end of stream: every holder of the server's end has closed it, the server and
    // any worker it made that has not yet handed itself over.
    bool control_open() const noexcept { return control_open_; }
    bool control_reading() const noexcept { return control_reading_; }

    // Asks for a worker for `slot`, without blocking. What went wrong, if it could not.
    std::optional<std::string> request_worker(core::slot_id slot);
    // The slot that asked with `sequence`, which is answered now.
    std::optional<core::slot_id> answered(std::uint64_t sequence);
    // Asks the server to exit: end of its control stream.
    void ask_to_exit();
    void kill() { process_.signal(SIGKILL); }

    // Waits until the control socket is readable, takes every packet it holds into
    // `packets`, then calls `done(more)`: false once the stream has ended or can no longer
    // be trusted.
    template <class Done>
    void read(std::shared_ptr<void> keep, Done done) {
        control_reading_ = true;
        control_.async_wait(boost::asio::posix::descriptor_base::wait_read,
                            [this, keep = std::move(keep), gen = process_.generation(),
                             done](boost::system::error_code ec) mutable {
                                if (process_.generation() != gen) {
                                    return;
                                }
                                control_reading_ = false;
                                std::vector<server_packet> packets;
                                const bool more = !ec && take_packets(packets);
                                if (!more) {
                                    control_open_ = false;
                                }
                                done(std::move(packets), more);
                            });
    }

private:
    // Reads every packet the control socket holds. False at end of stream or after a packet
    // that breaks the protocol (the server's exit follows, or it is killed).
    bool take_packets(std::vector<server_packet>& out);

    process_io process_;
    boost::asio::posix::stream_descriptor control_;
    bool control_reading_ = false;
    bool control_open_ = false;
    std::uint64_t sequence_ = 0;
    std::unordered_map<std::uint64_t, core::slot_id> requests_;  // sequence -> slot
};

}  // namespace torchpool::detail
