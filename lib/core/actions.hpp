// What the pool's core asks its driver to do. Each action is a plain value that compares
// (operator==) and prints itself (operator<<), so a test that expects one action and gets
// another says so in words: "expected signal{slot 3, SIGTERM}, got send_shutdown{slot 3}".
#pragma once

#include "types.hpp"
#include <torchpool/events.hpp>
#include <torchpool/task.hpp>

#include <boost/system/error_code.hpp>

#include <deque>
#include <iosfwd>
#include <memory>
#include <variant>

namespace torchpool::core {

/// Start a worker process for `slot` (direct mode: a new process running the executable).
struct spawn_action {
    slot_id slot;
};
/// Ask the fork server for a worker for `slot` (fork-server mode).
struct fork_action {
    slot_id slot;
};
/// Start the fork server.
struct start_server_action {};
/// Stop the fork server: ask it to exit (end of its control stream), or SIGKILL it.
struct stop_server_action {
    bool kill = false;
};
/// Write task `task`'s request to the worker of `slot`.
struct send_request_action {
    slot_id slot;
    task_id task;
    /// 1 for the task's first run, 2 for its first retry, ...
    unsigned attempt = 1;
};
/// Ask the worker of `slot` to exit once it has answered what it was sent.
struct send_shutdown_action {
    slot_id slot;
};
/// Tell the worker of `slot` that `task`, sent ahead, is no longer wanted.
struct send_cancel_action {
    slot_id slot;
    task_id task;
};
/// Send heartbeat `sequence` to the idle worker of `slot`; it answers with the same.
struct send_heartbeat_action {
    slot_id slot;
    std::uint64_t sequence;
};
/// Send `signo` to the worker process of `slot`.
struct signal_action {
    slot_id slot;
    int signo;
};
/// Complete task `task` for its caller.
struct complete_action {
    task_id task;
    boost::system::error_code error;
    // Shared, so that passing it along to the caller's handler moves a pointer, not the
    // strings of a response and its diagnostics.
    std::shared_ptr<response> result;
};
/// Every process is gone and every task completed: complete `async_run`.
struct run_finished_action {};
/// Tell the host's worker_event observer.
struct notify_action {
    worker_event event;
};

using action = std::variant<spawn_action, fork_action, start_server_action, stop_server_action,
                            send_request_action, send_shutdown_action, send_cancel_action,
                            send_heartbeat_action, signal_action, complete_action,
                            run_finished_action, notify_action>;

/// Where units put the actions they decide, oldest first; the driver pops them.
using action_queue = std::deque<action>;

bool operator==(const spawn_action&, const spawn_action&) noexcept;
bool operator==(const fork_action&, const fork_action&) noexcept;
bool operator==(const start_server_action&, const start_server_action&) noexcept;
bool operator==(const stop_server_action&, const stop_server_action&) noexcept;
bool operator==(const send_request_action&, const send_request_action&) noexcept;
bool operator==(const send_shutdown_action&, const send_shutdown_action&) noexcept;
bool operator==(const send_cancel_action&, const send_cancel_action&) noexcept;
bool operator==(const send_heartbeat_action&, const send_heartbeat_action&) noexcept;
bool operator==(const signal_action&, const signal_action&) noexcept;
/// Same task, same error and the same summary (the rest of a result is the caller's data).
bool operator==(const complete_action&, const complete_action&) noexcept;
bool operator==(const run_finished_action&, const run_finished_action&) noexcept;
bool operator==(const notify_action&, const notify_action&) noexcept;

std::ostream& operator<<(std::ostream&, const spawn_action&);
std::ostream& operator<<(std::ostream&, const fork_action&);
std::ostream& operator<<(std::ostream&, const start_server_action&);
std::ostream& operator<<(std::ostream&, const stop_server_action&);
std::ostream& operator<<(std::ostream&, const send_request_action&);
std::ostream& operator<<(std::ostream&, const send_shutdown_action&);
std::ostream& operator<<(std::ostream&, const send_cancel_action&);
std::ostream& operator<<(std::ostream&, const send_heartbeat_action&);
std::ostream& operator<<(std::ostream&, const signal_action&);
std::ostream& operator<<(std::ostream&, const complete_action&);
std::ostream& operator<<(std::ostream&, const run_finished_action&);
std::ostream& operator<<(std::ostream&, const notify_action&);
std::ostream& operator<<(std::ostream&, const action&);

/// A worker event's kind as a word ("ready", "exited", ...).
const char* kind_name(worker_event::kind k) noexcept;

}  // namespace torchpool::core
