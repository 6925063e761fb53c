// Plain C++ values for the messages of torchpool.capnp, so that the pool core and the
// worker SDK never touch Cap'n Proto readers or builders.
#pragma once

#include <torchpool/task.hpp>

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace torchpool::wire {

inline constexpr std::uint32_t protocol_version = 1;

struct hello_msg {
    int pid = 0;
    std::uint32_t protocol_version = 0;
    std::vector<std::string> capabilities;
    std::vector<std::string> methods;
};

struct request_msg {
    std::uint64_t id = 0;
    std::string method;
    std::uint64_t deadline_ns = 0;  // CLOCK_MONOTONIC, 0 = none
    std::string payload;
    std::vector<tensor> tensors;
};

struct reply_msg {
    std::uint64_t id = 0;
    bool ok = true;
    std::string error_type;
    std::string error_message;
    std::string payload;
    std::vector<tensor> tensors;
};

struct cancel_msg {
    std::uint64_t id = 0;
};

struct heartbeat_msg {
    std::uint64_t sequence = 0;
};

struct shutdown_msg {};

using message =
    std::variant<hello_msg, request_msg, reply_msg, cancel_msg, heartbeat_msg, shutdown_msg>;

/// Name of the message kind, for error messages ("hello", "reply", ...).
const char* message_name(const message& m) noexcept;

}  // namespace torchpool::wire
