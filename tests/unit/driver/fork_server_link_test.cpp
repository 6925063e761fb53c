// The pool's reader of the fork server's control packets (read_server_packets), on a real
// SOCK_SEQPACKET socket pair: what a misbehaving fork server sends is its protocol error, and
// the end of the stream is told from an empty packet.
#include "driver/fork_server_link.hpp"

#include "../../support/seqpacket.hpp"
#include "posix/fd_passing.hpp"
#include "wire/codec.hpp"

#include <catch2/catch.hpp>

#include <string>
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

std::string reply_packet(std::uint64_t sequence) {
    const auto frame = wire::encode(wire::fork_reply_msg{.sequence = sequence, .pid = 42});
    const auto bytes = frame.asBytes();
    return {reinterpret_cast<const char*>(bytes.begin()), bytes.size()};
}

std::string problem_of(const detail::server_packet& p) {
    const auto* what = std::get_if<std::string>(&p.what);
    return what ? *what : "";
}

}  // namespace

TEST_CASE("a fork reply arrives with its descriptors, and reading goes on until none is left",
          "[driver]") {
    socket_pair s;
    s.send(reply_packet(1), 3);
    s.send(reply_packet(2));
    std::vector<detail::server_packet> out;
    CHECK(detail::read_server_packets(s.fds[0], out));  // still open
    REQUIRE(out.size() == 2);
    CHECK(std::get<wire::fork_reply_msg>(out[0].what).sequence == 1);
    CHECK(out[0].fds.size() == 3);
    CHECK(out[1].fds.empty());
}

TEST_CASE("an empty packet is the fork server's protocol error, not the end of its stream",
          "[driver]") {
    socket_pair s;
    s.send("");
    s.send(reply_packet(1));
    std::vector<detail::server_packet> out;
    CHECK_FALSE(detail::read_server_packets(s.fds[0], out));
    REQUIRE(out.size() == 1);
    CHECK(problem_of(out[0]) == "sent an empty message");
}

TEST_CASE("the end of the stream is told as such, after what was sent before it", "[driver]") {
    socket_pair s;
    s.send(reply_packet(7));
    ::close(s.fds[1]);
    s.fds[1] = -1;
    std::vector<detail::server_packet> out;
    CHECK_FALSE(detail::read_server_packets(s.fds[0], out));
    REQUIRE(out.size() == 1);
    CHECK(std::get<wire::fork_reply_msg>(out[0].what).sequence == 7);
}

TEST_CASE("a packet with more descriptors than a message carries is a protocol error", "[driver]") {
    socket_pair s;
    s.send(reply_packet(1), 10);
    std::vector<detail::server_packet> out;
    CHECK_FALSE(detail::read_server_packets(s.fds[0], out));
    REQUIRE(out.size() == 1);
    CHECK(problem_of(out[0]) == "sent more than 8 descriptors with one message");
    CHECK(out[0].fds.size() == 10);  // received, and closed with the packet

    // More than one receive takes (posix::max_passed_fds): the kernel closed the rest.
    socket_pair flood;
    flood.send(reply_packet(1), 100);
    out.clear();
    CHECK_FALSE(detail::read_server_packets(flood.fds[0], out));
    REQUIRE(out.size() == 1);
    CHECK(problem_of(out[0]) == "sent more than 8 descriptors with one message");
    CHECK(out[0].fds.size() == posix::max_passed_fds);
}
