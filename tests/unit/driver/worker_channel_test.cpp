// The driver's worker channel on a real Unix socket pair, with no process behind it: frames
// written through a full socket arrive whole and in order (partial gathered writes), a stream
// that ends in the middle of a frame is told apart from a clean end, and a read armed before
// the channel was reopened for another process completes nothing.
#include "driver/worker_channel.hpp"

#include "wire/codec.hpp"
#include "wire/frame_reader.hpp"

#include <boost/asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <functional>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace torchpool;
using namespace torchpool::detail;

namespace {

// The channel's end (non-blocking, as the pool makes it) and the worker's end.
struct socket_pair {
    socket_pair() {
        int fds[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
        REQUIRE(::fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0);
        pool = posix::unique_fd(fds[0]);
        worker = fds[1];
    }
    ~socket_pair() {
        if (worker >= 0) {
            ::close(worker);
        }
    }
    posix::unique_fd pool;
    int worker = -1;
};

std::string bytes_of(const wire::frame& f) {
    auto b = f.asBytes();
    return {reinterpret_cast<const char*>(b.begin()), b.size()};
}

void write_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
        const ssize_t n = ::write(fd, bytes.data(), bytes.size());
        REQUIRE(n > 0);
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
}

// A channel whose socket holds little (a 4 KiB send buffer), so that writes stop part-way.
struct small_socket_channel {
    small_socket_channel() {
        int small = 4096;
        ::setsockopt(sockets.pool.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        channel.open(std::move(sockets.pool), owner);
    }
    boost::asio::io_context io;
    socket_pair sockets;
    worker_channel channel{io.get_executor(), 1 << 20};
    std::shared_ptr<int> owner = std::make_shared<int>(0);
};

}  // namespace

TEST_CASE("frames sent through a full socket arrive whole and in order", "[driver][channel]") {
    small_socket_channel c;
    auto& [io, sockets, channel, owner] = c;
    // 200 frames of 1-10 KB: far more than the socket holds, so writes stop part-way. Every
    // other one is a request in pieces: its head, then two tensors of the caller's own bytes
    // that it refers to, of odd sizes (each padded to whole words by a piece of its own).
    constexpr int frames = 200;
    const auto payload = [](int i) { return std::string(1000 * (1 + i % 10), 'a' + i % 26); };
    const auto bytes = [](int i, int k) { return std::string(1001 + 77 * i + k, 'A' + k); };
    for (int i = 0; i < frames; ++i) {
        const auto id = static_cast<std::uint64_t>(i);
        if (i % 2 == 0) {
            channel.send(
                share_frame(wire::encode(wire::reply_msg{.id = id, .payload = payload(i)})));
            continue;
        }
        std::vector<tensor> tensors;
        for (int k = 0; k < 2; ++k) {
            auto b = bytes(i, k);
            const auto n = static_cast<std::int64_t>(b.size());
            tensors.emplace_back(dtype::uint8, std::vector<std::int64_t>{n}, std::move(b));
        }
        request req("m", payload(i), std::move(tensors));
        auto gathered = wire::encode_request(id, 0, req);
        REQUIRE(gathered.pieces().size() >= 4);  // head, two tensors, padding
        channel.send(share_frame(std::move(gathered)));
    }
    // The worker reads as the pool's loop writes.
    wire::frame_reader reader(1 << 20);
    int got = 0;
    while (got < frames) {
        io.poll();
        auto space = reader.prepare(16 * 1024);
        const ssize_t n = ::recv(sockets.worker, space.data(), space.size(), MSG_DONTWAIT);
        if (n > 0) {
            reader.commit(static_cast<std::size_t>(n));
        }
        for (auto next = reader.next(); next.has_frame(); next = reader.next()) {
            auto decoded = wire::decode(next.words);
            REQUIRE(std::holds_alternative<wire::message>(decoded));
            const auto& m = std::get<wire::message>(decoded);
            if (got % 2 == 0) {
                const auto& reply = std::get<wire::reply_msg>(m);
                CHECK(reply.id == static_cast<std::uint64_t>(got));
                CHECK(reply.payload == payload(got));
            } else {
                const auto& req = std::get<wire::request_msg>(m);
                CHECK(req.id == static_cast<std::uint64_t>(got));
                CHECK(req.payload == payload(got));
                REQUIRE(req.tensors.size() == 2);
                CHECK(req.tensors[0].data == bytes(got, 0));
                CHECK(req.tensors[1].data == bytes(got, 1));
            }
            ++got;
        }
    }
    CHECK(!reader.finish());
}

TEST_CASE("a stream that ends in the middle of a frame is told from a clean end",
          "[driver][channel]") {
    boost::asio::io_context io;
    const auto whole = bytes_of(wire::encode(wire::heartbeat_msg{7}));
    for (const bool cut_short : {false, true}) {
        CAPTURE(cut_short);
        socket_pair sockets;
        worker_channel channel(io.get_executor(), 1 << 20);
        auto owner = std::make_shared<int>(0);
        channel.open(std::move(sockets.pool), owner);
        write_all(sockets.worker, cut_short ? whole.substr(0, whole.size() - 3) : whole);
        ::close(std::exchange(sockets.worker, -1));
        // Read as the driver does: the whole frames taken after each read, until the stream
        // ends.
        std::optional<std::string> how;
        std::size_t bytes = 0;
        int frames = 0;
        std::function<void()> read_on = [&] {
            channel.read(owner, [&](boost::system::error_code ec, std::size_t n) {
                bytes += n;
                for (auto next = channel.reader().next(); next.has_frame();
                     next = channel.reader().next()) {
                    ++frames;
                }
                if (ec) {
                    how = channel.ended(ec);
                } else {
                    read_on();
                }
            });
        };
        read_on();
        io.restart();
        io.run();
        CHECK(bytes == (cut_short ? whole.size() - 3 : whole.size()));
        CHECK(frames == (cut_short ? 0 : 1));
        REQUIRE(how);
        CHECK(*how ==
              (cut_short ? "closed its channel in the middle of a message" : "closed its channel"));
        CHECK_FALSE(channel.is_open());
    }
}

TEST_CASE("a read armed for one process completes nothing once the channel serves another",
          "[driver][channel]") {
    boost::asio::io_context io;
    socket_pair first, second;
    worker_channel channel(io.get_executor(), 1 << 20);
    auto owner = std::make_shared<int>(0);
    channel.open(std::move(first.pool), owner);
    int old_reads = 0;
    channel.read(owner, [&](boost::system::error_code, std::size_t) { ++old_reads; });
    // The process is replaced before its read completes: closing its socket completes the
    // old wait (aborted), which must reach nobody.
    channel.close();
    channel.open(std::move(second.pool), owner);
    int new_reads = 0;
    std::size_t new_bytes = 0;
    channel.read(owner, [&](boost::system::error_code, std::size_t n) {
        ++new_reads;
        new_bytes = n;
    });
    const auto fresh = bytes_of(wire::encode(wire::heartbeat_msg{1}));
    write_all(second.worker, fresh);
    io.run();
    CHECK(old_reads == 0);
    CHECK(new_reads == 1);
    CHECK(new_bytes == fresh.size());
    auto next = channel.reader().next();
    REQUIRE(next.has_frame());
    CHECK(std::holds_alternative<wire::message>(wire::decode(next.words)));
}

namespace {

// A descriptor whose identity can be checked at the other end: a pipe's write end, whose
// read end is kept here.
struct marked_pipe {
    marked_pipe() {
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0);
        read = posix::unique_fd(fds[0]);
        write = posix::unique_fd(fds[1]);
    }
    // Writes `mark` through `fd` (a received copy of `write`) and checks it arrives here.
    bool same_pipe(int fd, char mark) const {
        if (::write(fd, &mark, 1) != 1) {
            return false;
        }
        char got = 0;
        return ::read(read.get(), &got, 1) == 1 && got == mark;
    }
    posix::unique_fd read;
    posix::unique_fd write;
};

}  // namespace

TEST_CASE(
    "descriptors sent with a frame arrive with its bytes and in order, through a full "
    "socket",
    "[driver][channel]") {
    small_socket_channel c;
    auto& [io, sockets, channel, owner] = c;

    // 40 frames of 8 KB (more than the socket holds); every fourth carries two descriptors.
    constexpr int frames = 40;
    std::vector<marked_pipe> pipes(frames / 4 * 2);
    for (int i = 0; i < frames; ++i) {
        shared_fds fds;
        if (i % 4 == 0) {
            auto v = std::make_shared<std::vector<posix::unique_fd>>();
            for (int k = 0; k < 2; ++k) {
                v->emplace_back(::dup(pipes[i / 4 * 2 + k].write.get()));
            }
            fds = std::move(v);
        }
        channel.send(share_frame(wire::encode(wire::reply_msg{.id = static_cast<std::uint64_t>(i),
                                                              .payload = std::string(8000, 'p')})),
                     std::move(fds));
    }
    // The worker's end reads as the pool's loop writes, taking descriptors with the bytes.
    wire::frame_reader reader(1 << 20);
    std::vector<posix::unique_fd> received;
    int got = 0;
    while (got < frames) {
        io.poll();
        auto space = reader.prepare(16 * 1024);
        posix::receive_cuts cut;
        const ssize_t n =
            posix::receive_with_fds(sockets.worker, space.data(), space.size(), received, cut);
        REQUIRE_FALSE(cut.descriptors);
        if (n > 0) {
            reader.commit(static_cast<std::size_t>(n));
        }
        for (auto next = reader.next(); next.has_frame(); next = reader.next()) {
            // A frame's descriptors are there by the time its last byte is (a later frame's
            // may be too: a receive stops just after the first bytes that carry some).
            CHECK(received.size() >= static_cast<std::size_t>(got / 4 * 2 + 2));
            ++got;
        }
    }
    REQUIRE(received.size() == pipes.size());
    for (std::size_t k = 0; k < pipes.size(); ++k) {
        CHECK(pipes[k].same_pipe(received[k].get(), static_cast<char>('a' + k)));
    }
}

TEST_CASE(
    "descriptors that come in are kept in order, and a peer that piles them up ends the "
    "stream",
    "[driver][channel]") {
    boost::asio::io_context io;
    socket_pair sockets;
    worker_channel channel(io.get_executor(), 1 << 20);
    auto owner = std::make_shared<int>(0);
    channel.open(std::move(sockets.pool), owner);

    marked_pipe first, second;
    const auto frame = bytes_of(wire::encode(wire::heartbeat_msg{1}));
    const int pair[] = {first.write.get(), second.write.get()};
    iovec iov{const_cast<char*>(frame.data()), frame.size()};
    REQUIRE(posix::send_with_fds(sockets.worker, &iov, 1, pair) ==
            static_cast<ssize_t>(frame.size()));
    boost::system::error_code ec;
    CHECK(channel.read_available(ec) == frame.size());
    CHECK_FALSE(ec);
    REQUIRE(channel.descriptors_waiting() == 2);
    CHECK(first.same_pipe(channel.take_descriptor().get(), 'x'));
    CHECK(second.same_pipe(channel.take_descriptor().get(), 'y'));

    // More than max_passed_fds waiting, over several sends: the stream ends, in words.
    std::vector<int> many(posix::max_passed_fds / 2 + 1, first.write.get());
    for (int i = 0; i < 2; ++i) {
        REQUIRE(posix::send_with_fds(sockets.worker, &iov, 1, many) > 0);
    }
    for (int i = 0; i < 2 && !ec; ++i) {
        channel.read_available(ec);  // a receive takes one send's descriptors at most
    }
    CHECK(ec == boost::asio::error::message_size);
    const auto how = channel.ended(ec);
    REQUIRE(how);
    CHECK(*how == "sent more than 64 file descriptors that no message took");
}
