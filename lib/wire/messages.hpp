// Plain C++ values for the messages of torchpool.capnp, so that the pool core and the
// worker SDK never touch Cap'n Proto readers or builders.
#pragma once

#include <torchpool/task.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace torchpool::wire {

inline constexpr std::uint32_t protocol_version = 2;

/// Capability in a worker's hello: it answers a heartbeat from the pool with the same
/// heartbeat whenever no task runs.
inline constexpr std::string_view answers_heartbeats = "heartbeat";

/// Capability in a worker's hello: it maps the pool's input memory, places large results in
/// output memory of its own, and sends that memory (a sealed memfd) with the hello.
inline constexpr std::string_view uses_shared_memory = "shared-memory";

/// Error type of a reply whose handler stopped because its caller cancelled the task.
inline constexpr std::string_view cancelled_error = "torchpool::cancelled";

/// Where a tensor's bytes are in shared memory: in a request, the pool's input memory; in a
/// reply, the output memory of the worker that sent it.
struct shared_ref {
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    friend bool operator==(const shared_ref&, const shared_ref&) = default;
};

/// What a received message's shared references point into, for the decoder: it checks each
/// one (in range, not held already) and makes it the tensor's bytes, or says what is wrong.
class shared_space {
public:
    virtual std::variant<shared_bytes, std::string> claim(shared_ref where) = 0;

protected:
    ~shared_space() = default;
};

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

/// A request as the worker SDK reads it: views into the received frame, no copies.
struct request_view {
    std::uint64_t id = 0;
    std::string_view method;
    std::uint64_t deadline_ns = 0;
    std::string_view payload;
    std::vector<tensor_view> tensors;
};

/// A reply as the worker SDK writes it, from views of the handler's results.
struct reply_view {
    std::uint64_t id = 0;
    bool ok = true;
    std::string_view error_type;
    std::string_view error_message;
    std::string_view payload;
    std::span<const tensor_view> tensors;
    /// Where each tensor is in the worker's output memory, if it is there; empty: all inline.
    std::span<const std::optional<shared_ref>> placed;
};

struct cancel_msg {
    std::uint64_t id = 0;
};

struct heartbeat_msg {
    std::uint64_t sequence = 0;
};

struct shutdown_msg {};

/// Pool -> fork server: start one worker for `slot`.
struct fork_request_msg {
    std::uint64_t sequence = 0;
    std::uint32_t slot = 0;
};

/// Fork server -> pool; on success the worker's pidfd, channel and log pipe come with it.
struct fork_reply_msg {
    std::uint64_t sequence = 0;
    int pid = 0;
    std::string error;
    bool helper = false;  // a helper of the fork server hands itself over (its pidfd only)
};

/// Pool -> worker, before the request `task_id`: provoke `what` for it (fault injection).
struct fault_msg {
    std::uint64_t task_id = 0;
    fault what;
};

/// Pool -> worker: blocks of its output memory the pool no longer holds.
struct release_msg {
    std::vector<std::uint64_t> offsets;
};

using message =
    std::variant<hello_msg, request_msg, reply_msg, cancel_msg, heartbeat_msg, shutdown_msg,
                 fork_request_msg, fork_reply_msg, fault_msg, release_msg>;

/// Name of the message kind, for error messages ("hello", "reply", ...).
const char* message_name(const message& m) noexcept;

}  // namespace torchpool::wire
