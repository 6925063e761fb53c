// The pool's reader of the fork server's control packets (read_server_packets), on a real
// SOCK_SEQPACKET socket pair: what a misbehaving fork server sends is its protocol error, and
// the end of the stream is told from an empty packet.
#include "driver/fork_server_link.hpp"

#include "../../support/seqpacket.hpp"
#include "posix/fd_passing.hpp"
#include "wire/codec.hpp"
#include "wire/transport.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <tuple>
#include <vector>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace torchpool;

namespace {

struct socket_pair {
    socket_pair() {
        REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) == 0);
        ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
    }
    ~socket_pair() {
        ::close(fds[0]);
        if (fds[1] >= 0) {
            ::close(fds[1]);
        }
    }
    // Sends a packet with `count` descriptors (of /dev/null).
    void send(const std::string& bytes, std::size_t count = 0) const {
        const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        REQUIRE(test::send_with_descriptors(fds[1], bytes, count, null_fd));
        ::close(null_fd);
    }
    int fds[2];
};

std::string as_string(const wire::frame& frame) {
    const auto bytes = frame.asBytes();
    return {reinterpret_cast<const char*>(bytes.begin()), bytes.size()};
}

// A new worker's hand-over for `sequence` (its descriptors are sent apart).
std::string reply_packet(std::uint64_t sequence) {
    return as_string(wire::hand_over_worker(sequence, 42, -1, -1, -1).bytes);
}

std::string problem_of(const detail::server_packet& p) {
    const auto* broken = std::get_if<wire::fork_server_violation>(&p);
    return broken ? broken->what : "";
}

// The lowest descriptor number free now: what a leak would move.
int lowest_free_descriptor() {
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ::close(fd);
    return fd;
}

}  // namespace

TEST_CASE("each answer of the fork server arrives typed, with the descriptors its kind carries",
          "[driver]") {
    socket_pair s;
    s.send(reply_packet(1), 3);
    s.send(as_string(wire::refuse_fork(2, "cannot create the worker's channel").bytes));
    s.send(as_string(wire::refuse_fork(3, "the new worker died", 77, -1).bytes), 1);
    s.send(as_string(wire::hand_over_helper(78, -1).bytes), 1);
    std::vector<detail::server_packet> out;
    CHECK(detail::read_server_packets(s.fds[0], out));  // still open
    REQUIRE(out.size() == 4);
    const auto& made = std::get<wire::worker_handed_over>(out[0]);
    CHECK(made.sequence == 1);
    CHECK(made.pid == 42);
    CHECK(wire::descriptors_held(out[0]) == 3);
    const auto& refused = std::get<wire::fork_refused>(out[1]);
    CHECK(refused.sequence == 2);
    CHECK(refused.error == "cannot create the worker's channel");
    CHECK_FALSE(refused.process);
    const auto& died = std::get<wire::fork_refused>(out[2]);
    CHECK(died.pid == 77);
    CHECK(died.process);  // to reap
    CHECK(std::get<wire::helper_handed_over>(out[3]).pid == 78);
    CHECK(wire::descriptors_held(out[3]) == 1);
}

TEST_CASE(
    "descriptors other than a message's kind carries are a protocol error, and the "
    "process handed over is still given to be reaped",
    "[driver]") {
    const int free_before = lowest_free_descriptor();
    {
        socket_pair s;
        s.send(reply_packet(1), 2);
        std::vector<detail::server_packet> out;
        CHECK_FALSE(detail::read_server_packets(s.fds[0], out));
        REQUIRE(out.size() == 1);
        CHECK(problem_of(out[0]) ==
              "handed over a worker without its pidfd, channel and log pipe (2 descriptors)");
        CHECK(std::get<wire::fork_server_violation>(out[0]).process);  // the first: its pidfd
    }
    for (const auto& [packet, count, problem] :
         {std::tuple{as_string(wire::hand_over_helper(5, -1).bytes), 0,
                     "handed over a helper without its pidfd (0 descriptors)"},
          std::tuple{as_string(wire::refuse_fork(1, "no", 5, -1).bytes), 2,
                     "refused a fork with 2 descriptors"},
          std::tuple{as_string(wire::encode(wire::hello_msg{.pid = 5})), 1,
                     "sent descriptors with its hello"},
          std::tuple{as_string(wire::encode(wire::fork_request_msg{.sequence = 1})), 0,
                     "sent a fork request message"}}) {
        INFO(problem);
        socket_pair s;
        s.send(packet, static_cast<std::size_t>(count));
        std::vector<detail::server_packet> out;
        CHECK_FALSE(detail::read_server_packets(s.fds[0], out));
        REQUIRE(out.size() == 1);
        CHECK(problem_of(out[0]) == problem);
    }
    CHECK(lowest_free_descriptor() == free_before);  // every descriptor closed
}

TEST_CASE("an empty packet is the fork server's protocol error, not the end of its stream",
          "[driver]") {
    socket_pair s;
    s.send("");
    s.send(reply_packet(1), 3);
    std::vector<detail::server_packet> out;
    CHECK_FALSE(detail::read_server_packets(s.fds[0], out));
    REQUIRE(out.size() == 1);
    CHECK(problem_of(out[0]) == "sent an empty message");
}

TEST_CASE("the end of the stream is told as such, after what was sent before it", "[driver]") {
    socket_pair s;
    s.send(reply_packet(7), 3);
    ::close(s.fds[1]);
    s.fds[1] = -1;
    std::vector<detail::server_packet> out;
    CHECK_FALSE(detail::read_server_packets(s.fds[0], out));
    REQUIRE(out.size() == 1);
    CHECK(std::get<wire::worker_handed_over>(out[0]).sequence == 7);
}

TEST_CASE("a packet with more descriptors than a message carries is a protocol error", "[driver]") {
    const int free_before = lowest_free_descriptor();
    {
        socket_pair s;
        s.send(reply_packet(1), 10);
        std::vector<detail::server_packet> out;
        CHECK_FALSE(detail::read_server_packets(s.fds[0], out));
        REQUIRE(out.size() == 1);
        CHECK(problem_of(out[0]) == "sent more than 8 descriptors with one message");

        // More than one receive takes (posix::max_passed_fds): the kernel closed the rest.
        socket_pair flood;
        flood.send(reply_packet(1), 100);
        out.clear();
        CHECK_FALSE(detail::read_server_packets(flood.fds[0], out));
        REQUIRE(out.size() == 1);
        CHECK(problem_of(out[0]) == "sent more than 8 descriptors with one message");
    }
    CHECK(lowest_free_descriptor() == free_before);  // received, and closed with the packet
}
