// Fuzz target: a worker reading the host's channel, through the worker SDK's real serve loop
// (torchpool::worker::server on a given descriptor). The fuzzer is the pool: on a Unix stream
// socket pair it writes raw bytes and whole messages built from the input (requests with
// tensors, some over 1 KiB, which an echo writes back from where they are, for handlers that
// echo, throw, return an invalid tensor, or poll for cancellation; cancels, heartbeats,
// faults, hellos, shutdown), in one stream, then ends it. The loop must
// end by itself (0 at the end of the stream or a shutdown, 2 on bytes it cannot read), and
// everything it wrote back must be whole messages the host can decode.
#include "fuzz_input.hpp"
#include "wire/codec.hpp"
#include "wire/frame_reader.hpp"
#include <torchpool/worker.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sys/socket.h>
#include <unistd.h>

using namespace torchpool;

namespace {

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "worker_channel_fuzz: %s\n", what);
    std::abort();
}

std::string as_string(const wire::frame& f) {
    const auto bytes = f.asBytes();
    return {reinterpret_cast<const char*>(bytes.begin()), bytes.size()};
}

worker::result echo(const worker::call& c) {
    worker::result r{.payload = std::string(c.payload)};
    for (const auto& t : c.tensors) {
        r.tensors.push_back(t);  // views into the request, written before it is released
    }
    return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    fuzz::input in(data, size);
    const auto byte = [&] { return in.byte(); };
    const auto bytes = [&](std::size_t n) { return in.bytes(n); };
    static const char* const methods[] = {"echo", "throw", "invalid", "poll", "nothing"};
    std::string stream;
    for (int messages = 0; !in.empty() && messages < 64; ++messages) {
        switch (byte() % 8) {
            case 0:
                stream += bytes(byte());
                break;
            case 1:
            case 2: {
                wire::request_msg req{.id = byte(), .method = methods[byte() % 5]};
                req.deadline_ns = byte() < 16 ? 1 : 0;  // long past
                req.payload = bytes(byte() % 32);
                for (std::size_t n = byte() % 3; n > 0; --n) {
                    std::vector<std::int64_t> shape;
                    for (std::size_t d = byte() % 3; d > 0; --d) {
                        shape.push_back(byte() % 5);
                    }
                    req.tensors.emplace_back(static_cast<dtype>(byte() % 10), std::move(shape),
                                             bytes(byte() % 64));
                }
                if (byte() < 48) {
                    // Large enough that an echo writes it from where it is (gathered).
                    const std::size_t n = 1024 + byte() * 3u;
                    std::string large = bytes(n);
                    large.resize(n, 'x');
                    req.tensors.emplace_back(
                        dtype::uint8, std::vector<std::int64_t>{static_cast<std::int64_t>(n)},
                        std::move(large));
                }
                stream += as_string(wire::encode(req));
                break;
            }
            case 3:
                stream += as_string(wire::encode(wire::cancel_msg{.id = byte()}));
                break;
            case 4:
                stream += as_string(wire::encode(wire::heartbeat_msg{.sequence = byte()}));
                break;
            case 5:
                // Ignored: TORCHPOOL_FAULT_INJECTION is not set here, as in a worker whose
                // pool has fault injection off.
                stream += as_string(
                    wire::encode(wire::fault_msg{.task_id = byte(), .what = fault::crash(11)}));
                break;
            case 6:
                stream += as_string(wire::encode(wire::hello_msg{.pid = byte()}));
                break;
            default:
                if (byte() < 32) {
                    stream += as_string(wire::encode(wire::shutdown_msg{}));
                }
                break;
        }
    }
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
        fail("socketpair");
    }
    // The host's side: writes the stream and ends it, and reads every reply, at once, so
    // that neither side blocks on a full socket buffer.
    std::string replies;
    std::thread host([&] {
        std::thread writer([&] {
            for (std::size_t sent = 0; sent < stream.size();) {
                const ssize_t n =
                    ::send(pair[0], stream.data() + sent, stream.size() - sent, MSG_NOSIGNAL);
                if (n <= 0) {
                    break;  // the worker stopped reading
                }
                sent += static_cast<std::size_t>(n);
            }
            ::shutdown(pair[0], SHUT_WR);
        });
        char buffer[65536];
        for (;;) {
            const ssize_t n = ::read(pair[0], buffer, sizeof buffer);
            if (n <= 0) {
                break;
            }
            replies.append(buffer, static_cast<std::size_t>(n));
        }
        writer.join();
    });
    int code;
    {
        worker::server server(pair[1]);
        server.handle("echo", echo);
        server.handle("throw", [](const worker::call&) -> worker::result {
            throw std::invalid_argument("bad input");
        });
        server.handle("invalid", [](const worker::call&) {
            worker::result r;
            r.tensors.push_back(
                tensor_view::owning(tensor(dtype::float32, {3}, std::string(5, 'x'))));
            return r;
        });
        server.handle("poll", [](const worker::call& c) {
            c.throw_if_cancelled();
            return echo(c);
        });
        code = server.serve();
    }
    ::close(pair[1]);  // the worker is gone: the host reads to the end
    host.join();
    ::close(pair[0]);
    if (code != 0 && code != 2) {
        fail("the serve loop ended with an unexpected code");
    }
    // Everything the worker wrote is whole messages the host reads: a hello first, then
    // replies and heartbeats.
    wire::frame_reader reader(std::size_t{1} << 30);
    reader.append(std::as_bytes(std::span(replies.data(), replies.size())));
    bool first = true;
    for (;;) {
        auto next = reader.next();
        if (next.error) {
            fail("the worker wrote bytes that are not a message");
        }
        if (!next.has_frame()) {
            break;
        }
        auto decoded = wire::decode(next.words);
        if (std::holds_alternative<wire::decode_error>(decoded)) {
            fail("the worker wrote a message the host cannot decode");
        }
        const auto& m = std::get<wire::message>(decoded);
        if (first != std::holds_alternative<wire::hello_msg>(m)) {
            fail("the worker's first message is not its hello, or it said hello twice");
        }
        if (!first && !std::holds_alternative<wire::reply_msg>(m) &&
            !std::holds_alternative<wire::heartbeat_msg>(m)) {
            fail("the worker wrote a message that is neither a reply nor a heartbeat");
        }
        first = false;
    }
    if (reader.finish()) {
        fail("the worker's last message is cut short");
    }
    return 0;
}
