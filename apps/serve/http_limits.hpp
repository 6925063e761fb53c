// What torchpool-serve allows each HTTP connection: sizes, how many connections, and how long
// and how slow a client may be. Slow clients (slowloris, slow bodies, slow reading) hold a
// connection, never the server: each stage of a request has its own deadline, and the oldest
// waiting keep-alive connections make room when the cap is near.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace torchpool::serve {

struct http_limits {
    using clock = std::chrono::steady_clock;

    std::size_t max_body_bytes = 16u << 20;
    /// Connections served at once. Near it, the connections waiting longest for a request are
    /// closed to make room; past it, a new connection gets 503 and is closed.
    std::size_t max_connections = 4096;
    /// A request's head (request line and fields) must arrive whole within this of its first
    /// byte; a new connection must send a whole head within this of being accepted.
    std::chrono::milliseconds header_timeout{5'000};
    /// A keep-alive connection may wait this long for its next request.
    std::chrono::milliseconds idle_timeout{60'000};
    /// Bodies must arrive, and responses be read, at this many bytes a second on average,
    /// after a grace of `header_timeout`.
    std::uint64_t min_bytes_per_second = 4096;
    /// Deadline of an inference task (queue wait included).
    std::chrono::milliseconds request_timeout{30'000};
    /// parameters.torchpool_fault is honoured (tests only; the pools must allow faults).
    bool fault_injection = false;
    /// Clients may register shared-memory regions (Triton's system shared-memory extension)
    /// and name them in infer requests. Off by default: a client that can reach the server
    /// could otherwise read and write any POSIX shared-memory object the server can open.
    bool shared_memory = false;

    /// When `bytes` must have moved, for a transfer that began at `start`.
    clock::time_point transfer_deadline(clock::time_point start, std::uint64_t bytes) const {
        const auto rate = std::max<std::uint64_t>(1, min_bytes_per_second);
        const auto allowed = std::chrono::microseconds(
            std::min<std::uint64_t>(bytes, std::uint64_t{1} << 40) * 1'000'000 / rate);
        return start + header_timeout + allowed;
    }
};

}  // namespace torchpool::serve
