// A worker's link with no process behind it: a pipe stands for its pidfd (readable when "it
// exits", with a scripted reaper), another for its output, a socketpair for its channel. What
// is checked is the order the pool relies on: everything the worker sent and wrote before it
// died is taken before its exit is told, however the wake-ups fall.
#include "driver/worker_link.hpp"

#include "wire/codec.hpp"

#include <boost/asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <deque>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace torchpool;
using namespace torchpool::detail;

namespace {

std::deque<core::exit_status> exits;

std::optional<core::exit_status> scripted_reap(int) {
    if (exits.empty()) {
        return std::nullopt;
    }
    auto status = exits.front();
    exits.pop_front();
    return status;
}
bool no_signal(int, int) noexcept {
    return true;
}
bool not_exited(int) {
    return false;
}

// What the link told, in order: "frame 7", "output: ...", "closed: ...", "error: ...", "exit".
struct recorder final : worker_link::events {
    void output(core::slot_id, std::string_view bytes, bool at_exit) override {
        if (!bytes.empty()) {
            written.append(bytes);
        }
        if (at_exit) {
            told.push_back("output: " + written);
        }
    }
    bool frames(core::slot_id, wire::frame_reader& reader) override {
        for (auto next = reader.next(); next.has_frame(); next = reader.next()) {
            auto decoded = wire::decode(next.words);
            REQUIRE(std::holds_alternative<wire::message>(decoded));
            told.push_back(
                "frame " +
                std::to_string(std::get<wire::reply_msg>(std::get<wire::message>(decoded)).id));
        }
        return true;
    }
    void protocol_error(core::slot_id, std::string what) override {
        told.push_back("error: " + what);
    }
    void channel_closed(core::slot_id, std::string how) override {
        told.push_back("closed: " + how);
    }
    void exited(core::slot_id, core::exit_status status) override {
        told.push_back("exit " + std::to_string(status.signal.value_or(0)));
    }
    void settle() override {}

    std::string written;
    std::vector<std::string> told;
};

// The worker's ends of its descriptors.
struct fake_worker {
    fake_worker() {
        int p[2];
        REQUIRE(::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
        pidfd = posix::unique_fd(p[0]);
        exit_signal = posix::unique_fd(p[1]);
        REQUIRE(::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
        log = posix::unique_fd(p[0]);
        output = posix::unique_fd(p[1]);
        int s[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) == 0);
        REQUIRE(::fcntl(s[0], F_SETFL, O_NONBLOCK) == 0);
        channel = posix::unique_fd(s[0]);
        socket = posix::unique_fd(s[1]);
    }
    void send_reply(std::uint64_t id) const {
        const auto frame = wire::encode(wire::reply_msg{.id = id, .ok = true});
        const auto bytes = frame.asBytes();
        REQUIRE(::write(socket.get(), bytes.begin(), bytes.size()) ==
                static_cast<ssize_t>(bytes.size()));
    }
    void write_output(const std::string& text) const {
        REQUIRE(::write(output.get(), text.data(), text.size()) ==
                static_cast<ssize_t>(text.size()));
    }
    void die(int signo) {
        exits.push_back(core::exit_status{.signal = signo});
        REQUIRE(::write(exit_signal.get(), "x", 1) == 1);
    }
    // The pool's ends, handed to the link.
    posix::unique_fd pidfd, log, channel;
    // The worker's ends.
    posix::unique_fd exit_signal, output, socket;
};

struct harness {
    harness() { exits.clear(); }
    void adopt(fake_worker& w) {
        link.adopt(42, std::move(w.pidfd), std::move(w.channel), std::move(w.log), owner);
    }
    boost::asio::io_context io;
    recorder sink;
    worker_link link{io.get_executor(), 0, 1 << 20, sink, {scripted_reap, no_signal, not_exited}};
    std::shared_ptr<int> owner = std::make_shared<int>(0);
};

}  // namespace

TEST_CASE("a reply and the output written just before a crash are taken before the exit is told",
          "[driver][worker_link]") {
    for (const bool exit_first : {false, true}) {
        CAPTURE(exit_first);
        harness h;
        fake_worker w;
        h.adopt(w);
        if (exit_first) {
            // The exit's wake-up is ready before the channel's and the pipe's bytes are.
            w.die(SIGSEGV);
            h.io.poll_one();
        }
        w.send_reply(7);
        w.write_output("Segmentation fault in forward()\n");
        if (!exit_first) {
            w.die(SIGSEGV);
        }
        h.io.run();
        // The reply and the output, in whichever order their reads fell; the exit last.
        auto told = h.sink.told;
        REQUIRE(told.size() == 3);
        CHECK(told.back() == "exit " + std::to_string(SIGSEGV));
        told.pop_back();
        std::sort(told.begin(), told.end());
        CHECK(told ==
              std::vector<std::string>{"frame 7", "output: Segmentation fault in forward()\n"});
        CHECK_FALSE(h.link.alive());
    }
}

TEST_CASE("a channel closed before the exit is told as closed, then the exit",
          "[driver][worker_link]") {
    harness h;
    fake_worker w;
    h.adopt(w);
    w.send_reply(1);
    w.socket.reset();  // the worker closed its channel
    h.io.poll();
    CHECK(h.sink.told == std::vector<std::string>{"frame 1", "closed: closed its channel"});
    w.die(SIGKILL);
    h.io.run();
    CHECK(h.sink.told.back() == "exit " + std::to_string(SIGKILL));
    CHECK(h.link.alive() == false);
}

TEST_CASE("a worker that sends descriptors is told as a protocol error", "[driver][worker_link]") {
    harness h;
    fake_worker w;
    h.adopt(w);
    const auto frame = wire::encode(wire::reply_msg{.id = 3, .ok = true});
    const auto bytes = frame.asBytes();
    iovec iov{const_cast<kj::byte*>(bytes.begin()), bytes.size()};
    const int fds[] = {w.output.get()};
    REQUIRE(posix::send_with_fds(w.socket.get(), &iov, 1, fds) ==
            static_cast<ssize_t>(bytes.size()));
    h.io.poll();
    CHECK(h.sink.told ==
          std::vector<std::string>{
              "frame 3",
              "error: sent file descriptors with a message other than its hello (which may carry "
              "its output memory)"});
}
