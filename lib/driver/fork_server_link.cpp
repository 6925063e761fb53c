#include "fork_server_link.hpp"

#include "../posix/fd_passing.hpp"
#include "../wire/codec.hpp"

#include <capnp/common.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <span>

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

namespace torchpool::detail {

void fork_server_link::open(posix::spawned_process& p) {
    process_.take(p);
    control_.assign(p.channel.release());
    control_open_ = true;
    requests_.clear();
}

void fork_server_link::close() {
    process_.retire();
    boost::system::error_code ignored;
    control_.close(ignored);
    requests_.clear();
}

std::optional<std::string> fork_server_link::request_worker(core::slot_id slot) {
    const std::uint64_t sequence = ++sequence_;
    const auto packet =
        wire::encode(wire::fork_request_msg{sequence, static_cast<std::uint32_t>(slot)});
    const auto bytes = packet.asBytes();
    ssize_t n;
    do {
        n = process_.alive() ? ::send(control_.native_handle(), bytes.begin(), bytes.size(),
                                      MSG_NOSIGNAL | MSG_DONTWAIT)
                             : -1;
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(bytes.size())) {
        // Gone or not keeping up (a full socket buffer holds hundreds of requests).
        return std::string("cannot ask the fork server for a worker: ") +
               (process_.alive() ? std::strerror(errno) : "it is not running");
    }
    requests_[sequence] = slot;
    return std::nullopt;
}

std::optional<core::slot_id> fork_server_link::answered(std::uint64_t sequence) {
    auto it = requests_.find(sequence);
    if (it == requests_.end()) {
        return std::nullopt;
    }
    const core::slot_id slot = it->second;
    requests_.erase(it);
    return slot;
}

void fork_server_link::ask_to_exit() {
    if (process_.alive()) {
        ::shutdown(control_.native_handle(), SHUT_WR);  // its loop returns and it exits
    }
}

bool fork_server_link::take_packets(std::vector<server_packet>& out) {
    return control_.is_open() && read_server_packets(control_.native_handle(), out);
}

namespace {

// Most descriptors a message carries (a worker comes with three).
constexpr std::size_t max_descriptors = 8;

bool peer_hung_up(int socket) {
    pollfd p{socket, POLLRDHUP, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP)) != 0;
}

}  // namespace

bool read_server_packets(int socket, std::vector<server_packet>& out) {
    const auto problem = [&out](std::string what) {
        out.emplace_back(wire::fork_server_violation{std::move(what), {}});
        return false;
    };
    for (;;) {
        alignas(capnp::word) std::array<char, 4096> buffer;
        std::vector<posix::unique_fd> fds;
        posix::receive_cuts cut;
        const ssize_t n = posix::receive_with_fds(socket, buffer.data(), buffer.size(), fds, cut);
        if (n < 0 && errno == ECONNRESET) {
            // The server died with requests unread. It is reported once, and what the
            // workers it made sent is still queued behind it: read on.
            continue;
        }
        if (n < 0) {
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
        if (n == 0) {
            // The end of the stream, or an empty packet (SOCK_SEQPACKET reads both as 0
            // bytes): at the end, the peer has hung up.
            if (fds.empty() && peer_hung_up(socket)) {
                return false;
            }
            return problem("sent an empty message");
        }
        if (fds.size() > max_descriptors ||
            (cut.descriptors && fds.size() >= posix::max_passed_fds)) {
            return problem("sent more than " + std::to_string(max_descriptors) +
                           " descriptors with one message");
        }
        if (cut.descriptors && !cut.bytes) {
            // Not the server's fault: the kernel could not install the descriptors here.
            return problem(
                "sent descriptors that this process could not receive (MSG_CTRUNC): it has "
                "no descriptor left under its open-file limit (RLIMIT_NOFILE)");
        }
        if (cut.bytes || n % 8 != 0) {
            return problem("sent a message that is not a whole Cap'n Proto frame");
        }
        out.push_back(wire::decode_from_fork_server(
            std::span<const capnp::word>(reinterpret_cast<const capnp::word*>(buffer.data()),
                                         static_cast<std::size_t>(n) / 8),
            std::move(fds)));
        if (std::holds_alternative<wire::fork_server_violation>(out.back())) {
            return false;
        }
    }
}

}  // namespace torchpool::detail
