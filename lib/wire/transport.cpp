#include "transport.hpp"

#include <utility>

namespace torchpool::wire {

outgoing hand_over_worker(std::uint64_t sequence, int pid, int pidfd, int channel, int output) {
    return {encode(fork_reply_msg{.sequence = sequence, .pid = pid}), {pidfd, channel, output}};
}

outgoing hand_over_helper(int pid, int pidfd) {
    return {encode(fork_reply_msg{.pid = pid, .helper = true}), {pidfd}};
}

outgoing refuse_fork(std::uint64_t sequence, std::string error, int pid, int pidfd) {
    outgoing out{
        encode(fork_reply_msg{.sequence = sequence, .pid = pid, .error = std::move(error)}), {}};
    if (pidfd >= 0) {
        out.descriptors.push_back(pidfd);
    }
    return out;
}

namespace {

// The first descriptor of a hand-over that breaks the protocol is taken for the pidfd of the
// process it hands over, so that the pool still reaps that process.
fork_server_violation violation(std::string what, std::vector<posix::unique_fd>& fds) {
    fork_server_violation v{std::move(what), {}};
    if (!fds.empty()) {
        v.process = std::move(fds.front());
    }
    return v;
}

from_fork_server fork_reply(fork_reply_msg&& reply, std::vector<posix::unique_fd>& fds) {
    const std::size_t n = fds.size();
    if (reply.helper) {
        if (n != 1 || reply.pid <= 0) {
            return violation(
                "handed over a helper without its pidfd (" + std::to_string(n) + " descriptors)",
                fds);
        }
        return helper_handed_over{reply.pid, std::move(fds[0])};
    }
    if (!reply.error.empty()) {
        if (n > 1) {
            return violation("refused a fork with " + std::to_string(n) + " descriptors", fds);
        }
        fork_refused refused{reply.sequence, std::move(reply.error), reply.pid, {}};
        if (n == 1) {
            refused.process = std::move(fds[0]);
        }
        return refused;
    }
    if (n != 3 || reply.pid <= 0) {
        return violation("handed over a worker without its pidfd, channel and log pipe (" +
                             std::to_string(n) + " descriptors)",
                         fds);
    }
    return worker_handed_over{reply.sequence, reply.pid, std::move(fds[0]), std::move(fds[1]),
                              std::move(fds[2])};
}

}  // namespace

from_fork_server decode_from_fork_server(std::span<const capnp::word> words,
                                         std::vector<posix::unique_fd> fds) {
    auto decoded = decode(words);
    if (auto* bad = std::get_if<decode_error>(&decoded)) {
        return fork_server_violation{"sent a malformed message: " + bad->what, {}};
    }
    auto& m = std::get<message>(decoded);
    if (auto* hello = std::get_if<hello_msg>(&m)) {
        if (!fds.empty()) {
            return fork_server_violation{"sent descriptors with its hello", {}};
        }
        return *hello;
    }
    if (auto* reply = std::get_if<fork_reply_msg>(&m)) {
        return fork_reply(std::move(*reply), fds);
    }
    return fork_server_violation{std::string("sent a ") + message_name(m) + " message", {}};
}

std::size_t descriptors_held(const from_fork_server& m) noexcept {
    struct count {
        std::size_t operator()(const hello_msg&) const noexcept { return 0; }
        std::size_t operator()(const worker_handed_over& w) const noexcept {
            return (w.pidfd ? 1 : 0) + (w.channel ? 1 : 0) + (w.output ? 1 : 0);
        }
        std::size_t operator()(const helper_handed_over& h) const noexcept {
            return h.pidfd ? 1 : 0;
        }
        std::size_t operator()(const fork_refused& r) const noexcept { return r.process ? 1 : 0; }
        std::size_t operator()(const fork_server_violation& v) const noexcept {
            return v.process ? 1 : 0;
        }
    };
    return std::visit(count{}, m);
}

}  // namespace torchpool::wire
