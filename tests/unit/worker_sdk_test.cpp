// The worker SDK's server loop, driven over a socketpair from a test thread: no processes.
#include "wire/codec.hpp"
#include "wire/frame_reader.hpp"
#include <torchpool/worker.hpp>

#include <catch2/catch.hpp>

#include <cstring>
#include <future>
#include <stdexcept>
#include <thread>

#include <sys/socket.h>
#include <unistd.h>

using namespace torchpool;

namespace {

std::string bytes_of(const wire::frame& f) {
    return {reinterpret_cast<const char*>(f.asBytes().begin()), f.asBytes().size()};
}

// The pool's side of a channel to a server running on another thread.
class fake_pool {
public:
    fake_pool() {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        fd_ = sv[0];
        worker_fd_ = sv[1];
    }
    ~fake_pool() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
        ::close(worker_fd_);
    }

    int worker_fd() const { return worker_fd_; }

    // Runs `server.serve()` on another thread and takes its hello; the future holds the
    // exit code serve() returns.
    std::future<int> start(worker::server& server, wire::hello_msg* hello = nullptr) {
        auto serving = std::async(std::launch::async, [&server] { return server.serve(); });
        auto first = std::get<wire::hello_msg>(receive());
        if (hello) {
            *hello = std::move(first);
        }
        return serving;
    }

    void send(const wire::frame& f) { send_raw(bytes_of(f)); }
    void send_raw(std::string_view bytes) {
        REQUIRE(::write(fd_, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    }
    void close() {
        ::close(fd_);
        fd_ = -1;
    }

    // Blocks until the next whole message (the server thread always sends one).
    wire::message receive() {
        for (;;) {
            auto next = reader_.next();
            REQUIRE(!next.error);
            if (next.has_frame()) {
                auto decoded = wire::decode(next.words);
                REQUIRE(std::holds_alternative<wire::message>(decoded));
                return std::get<wire::message>(decoded);
            }
            auto space = reader_.prepare(4096);
            const ssize_t n = ::read(fd_, space.data(), space.size());
            REQUIRE(n > 0);
            reader_.commit(static_cast<std::size_t>(n));
        }
    }

private:
    int fd_ = -1;
    int worker_fd_ = -1;
    wire::frame_reader reader_{1 << 20};
};

wire::request_msg request_frame(std::uint64_t id, std::string method, std::string payload = {}) {
    return {.id = id, .method = std::move(method), .payload = std::move(payload)};
}

}  // namespace

TEST_CASE("the SDK says hello, serves requests in order and stops at end of stream", "[sdk]") {
    fake_pool pool;
    worker::server server(pool.worker_fd());
    server.handle("upper", [](const worker::call& c) {
        std::string text(c.payload);
        for (auto& ch : text) {
            ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        }
        return worker::result{.payload = text, .tensors = {c.tensors.begin(), c.tensors.end()}};
    });
    server.handle("throw", [](const worker::call&) -> worker::result {
        throw std::out_of_range("index 7 is past the end");
    });
    wire::hello_msg hello;
    auto serving = pool.start(server, &hello);
    CHECK(hello.pid == ::getpid());
    CHECK(hello.protocol_version == wire::protocol_version);
    CHECK(hello.methods == std::vector<std::string>{"throw", "upper"});

    // Two requests in one write: two replies, in order.
    pool.send_raw(bytes_of(wire::encode(request_frame(1, "upper", "abc"))) +
                  bytes_of(wire::encode(request_frame(2, "throw"))));
    auto first = std::get<wire::reply_msg>(pool.receive());
    CHECK(first.id == 1);
    CHECK(first.ok);
    CHECK(first.payload == "ABC");
    auto second = std::get<wire::reply_msg>(pool.receive());
    CHECK(second.id == 2);
    CHECK_FALSE(second.ok);
    CHECK(second.error_type == "std::out_of_range");
    CHECK(second.error_message == "index 7 is past the end");

    // Unknown method: an error reply naming what the worker serves.
    pool.send(wire::encode(request_frame(3, "nope")));
    auto third = std::get<wire::reply_msg>(pool.receive());
    CHECK(third.error_type == "torchpool::unknown_method");
    CHECK_THAT(third.error_message, Catch::Contains("upper"));

    pool.close();
    CHECK(serving.get() == 0);
}

TEST_CASE("the SDK exits cleanly on a shutdown message", "[sdk]") {
    fake_pool pool;
    worker::server server(pool.worker_fd());
    auto serving = pool.start(server);
    pool.send(wire::encode(wire::shutdown_msg{}));
    CHECK(serving.get() == 0);
}

TEST_CASE("the SDK skips a request cancelled before it started, and still replies", "[sdk]") {
    fake_pool pool;
    worker::server server(pool.worker_fd());
    int runs = 0;
    server.handle("count", [&](const worker::call&) {
        ++runs;
        return worker::result{};
    });
    auto serving = pool.start(server);
    pool.send_raw(bytes_of(wire::encode(request_frame(5, "count"))) +
                  bytes_of(wire::encode(wire::cancel_msg{5})));
    auto reply = std::get<wire::reply_msg>(pool.receive());
    CHECK(reply.id == 5);
    CHECK(reply.error_type == "torchpool::cancelled");
    pool.close();
    CHECK(serving.get() == 0);
    CHECK(runs == 0);
}

TEST_CASE("the SDK refuses a result tensor whose bytes do not match its shape", "[sdk]") {
    fake_pool pool;
    worker::server server(pool.worker_fd());
    server.handle("bad", [](const worker::call&) {
        return worker::result{
            .tensors = {tensor_view::owning(tensor(dtype::float32, {4}, std::string(3, 'x')))}};
    });
    auto serving = pool.start(server);
    pool.send(wire::encode(request_frame(1, "bad")));
    auto reply = std::get<wire::reply_msg>(pool.receive());
    CHECK(reply.error_type == "torchpool::invalid_result");
    CHECK_THAT(reply.error_message, Catch::Contains("3 bytes"));
    pool.close();
    CHECK(serving.get() == 0);
}

TEST_CASE("the SDK stops with code 2 when the pool sends garbage", "[sdk]") {
    fake_pool pool;
    worker::server server(pool.worker_fd());
    auto serving = pool.start(server);
    const std::uint32_t header[2] = {0xffffffffu, 0};
    pool.send_raw(std::string_view(reinterpret_cast<const char*>(header), sizeof header));
    CHECK(serving.get() == 2);
}
