// Fuzz target: the packets the pool reads from the fork server's control socket. The fuzzer
// is the fork server: it writes packets of its choosing (raw bytes, or hello and fork-reply
// messages built from the input), each with up to 10 descriptors by SCM_RIGHTS (more than the
// pool takes), some longer than the pool's buffer, on a real SOCK_SEQPACKET socket pair, and
// perhaps ends the stream. The pool's own reader (read_server_packets, the code behind
// fork_server_link) takes them, as it does from recvmsg.
//
// Oracles beyond "no crash, no sanitizer report": only the last packet read may be a problem,
// and reading stops there; a message arrives with exactly the descriptors sent with it; no
// descriptor is left open once the packets are dropped. (A message that arrives with other
// descriptors than its kind carries is a problem; one that is not holds exactly those sent.)
#include "../support/seqpacket.hpp"
#include "driver/fork_server_link.hpp"
#include "fuzz_input.hpp"
#include "wire/codec.hpp"
#include "wire/transport.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace torchpool;

namespace {

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "fork_server_link_fuzz: %s\n", what);
    std::abort();
}

int lowest_free_descriptor() {
    const int fd = ::dup(2);
    ::close(fd);
    return fd;
}

std::string as_string(const wire::frame& f) {
    const auto bytes = f.asBytes();
    return {reinterpret_cast<const char*>(bytes.begin()), bytes.size()};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const int free_before = lowest_free_descriptor();
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
        fail("socketpair");
    }
    ::fcntl(pair[0], F_SETFL, O_NONBLOCK);
    fuzz::input in(data, size);
    const auto byte = [&] { return in.byte(); };
    const auto bytes = [&](std::size_t n) { return in.bytes(n); };
    std::vector<std::size_t> sent_fds;  // per packet, in order
    bool ended = false;
    for (int packets = 0; !in.empty() && packets < 32; ++packets) {
        const std::uint8_t kind = byte();
        const std::size_t fds = byte() % 11;
        std::string packet;
        switch (kind % 4) {
            case 0: {  // raw bytes: up to 6 KiB (the pool's buffer is 4 KiB)
                const std::size_t n = (std::size_t{byte()} << 8 | byte()) % 6144;
                packet = bytes(n);
                break;
            }
            case 1:
                packet = as_string(wire::encode(wire::hello_msg{
                    .pid = byte(),
                    .protocol_version = byte() < 200 ? wire::protocol_version : byte()}));
                break;
            case 2:
                packet = as_string(wire::encode(
                    wire::fork_reply_msg{.sequence = byte(),
                                         .pid = static_cast<int>(static_cast<std::int8_t>(byte())),
                                         .error = bytes(byte() % 32),
                                         .helper = (byte() & 1) != 0}));
                break;
            default:
                packet = as_string(wire::encode(wire::fork_request_msg{.sequence = byte()}));
                break;
        }
        if ((kind & 0x80) != 0 && packet.size() >= 8) {
            packet[byte() % packet.size()] ^= static_cast<char>(byte() | 1);  // one bad byte
        }
        if (test::send_with_descriptors(pair[1], packet, fds, null_fd)) {
            sent_fds.push_back(fds);
        }
    }
    if ((size & 1) != 0) {
        ::close(pair[1]);  // the fork server and every worker it made are gone
        pair[1] = -1;
        ended = true;
    }
    {
        std::vector<detail::server_packet> out;
        const bool more = detail::read_server_packets(pair[0], out);
        for (std::size_t i = 0; i < out.size(); ++i) {
            const bool problem = std::holds_alternative<wire::fork_server_violation>(out[i]);
            if (problem && (i + 1 != out.size() || more)) {
                fail("reading went on after a packet that breaks the protocol");
            }
            if (i >= sent_fds.size()) {
                fail("more packets read than sent");
            }
            if (!problem && wire::descriptors_held(out[i]) != sent_fds[i]) {
                fail("a message arrived without exactly the descriptors sent with it");
            }
            if (problem && std::get<wire::fork_server_violation>(out[i]).what.empty()) {
                fail("a problem without words");
            }
        }
        if (more && out.size() != sent_fds.size()) {
            fail("packets left unread while the stream is still trusted");
        }
        if (!more && !ended &&
            (out.empty() || !std::holds_alternative<wire::fork_server_violation>(out.back()))) {
            fail("reading stopped with neither an end of stream nor a problem");
        }
    }
    ::close(pair[0]);
    if (pair[1] >= 0) {
        ::close(pair[1]);
    }
    if (lowest_free_descriptor() != free_before) {
        fail("a descriptor was left open");
    }
    return 0;
}
