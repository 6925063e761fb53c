#include "actions.hpp"

#include <torchpool/error.hpp>

#include <ostream>

namespace torchpool::core {

bool operator==(const spawn_action& a, const spawn_action& b) noexcept {
    return a.slot == b.slot;
}
bool operator==(const fork_action& a, const fork_action& b) noexcept {
    return a.slot == b.slot;
}
bool operator==(const start_server_action&, const start_server_action&) noexcept {
    return true;
}
bool operator==(const stop_server_action& a, const stop_server_action& b) noexcept {
    return a.kill == b.kill;
}
bool operator==(const send_request_action& a, const send_request_action& b) noexcept {
    return a.slot == b.slot && a.task == b.task && a.attempt == b.attempt;
}
bool operator==(const send_shutdown_action& a, const send_shutdown_action& b) noexcept {
    return a.slot == b.slot;
}
bool operator==(const send_cancel_action& a, const send_cancel_action& b) noexcept {
    return a.slot == b.slot && a.task == b.task;
}
bool operator==(const send_heartbeat_action& a, const send_heartbeat_action& b) noexcept {
    return a.slot == b.slot && a.sequence == b.sequence;
}
bool operator==(const signal_action& a, const signal_action& b) noexcept {
    return a.slot == b.slot && a.signo == b.signo;
}
bool operator==(const complete_action& a, const complete_action& b) noexcept {
    const auto summary = [](const complete_action& c) -> const std::string* {
        return c.result ? &c.result->diagnostics.summary : nullptr;
    };
    const auto *sa = summary(a), *sb = summary(b);
    return a.task == b.task && a.error == b.error &&
           (sa == nullptr || sb == nullptr ? sa == sb : *sa == *sb);
}
bool operator==(const run_finished_action&, const run_finished_action&) noexcept {
    return true;
}
bool operator==(const notify_action& a, const notify_action& b) noexcept {
    return a.event.what == b.event.what && a.event.slot == b.event.slot &&
           a.event.pid == b.event.pid && a.event.description == b.event.description;
}

std::ostream& operator<<(std::ostream& os, const spawn_action& a) {
    return os << "spawn{slot " << a.slot << "}";
}
std::ostream& operator<<(std::ostream& os, const fork_action& a) {
    return os << "fork{slot " << a.slot << "}";
}
std::ostream& operator<<(std::ostream& os, const start_server_action&) {
    return os << "start_server{}";
}
std::ostream& operator<<(std::ostream& os, const stop_server_action& a) {
    return os << "stop_server{" << (a.kill ? "kill" : "ask") << "}";
}
std::ostream& operator<<(std::ostream& os, const send_request_action& a) {
    os << "send_request{slot " << a.slot << ", task " << a.task;
    if (a.attempt > 1) {
        os << ", attempt " << a.attempt;
    }
    return os << "}";
}
std::ostream& operator<<(std::ostream& os, const send_shutdown_action& a) {
    return os << "send_shutdown{slot " << a.slot << "}";
}
std::ostream& operator<<(std::ostream& os, const send_cancel_action& a) {
    return os << "send_cancel{slot " << a.slot << ", task " << a.task << "}";
}
std::ostream& operator<<(std::ostream& os, const send_heartbeat_action& a) {
    return os << "send_heartbeat{slot " << a.slot << ", sequence " << a.sequence << "}";
}
std::ostream& operator<<(std::ostream& os, const signal_action& a) {
    return os << "signal{slot " << a.slot << ", " << signal_name(a.signo) << "}";
}
std::ostream& operator<<(std::ostream& os, const complete_action& a) {
    os << "complete{task " << a.task << ", " << (a.error ? a.error.message() : "ok");
    if (a.result && !a.result->diagnostics.summary.empty()) {
        os << ", \"" << a.result->diagnostics.summary << "\"";
    }
    return os << "}";
}
std::ostream& operator<<(std::ostream& os, const run_finished_action&) {
    return os << "run_finished{}";
}
const char* kind_name(worker_event::kind k) noexcept {
    using kind = worker_event::kind;
    switch (k) {
        case kind::started:
            return "started";
        case kind::ready:
            return "ready";
        case kind::exited:
            return "exited";
        case kind::start_failed:
            return "start_failed";
        case kind::fork_server_started:
            return "fork_server_started";
        case kind::fork_server_ready:
            return "fork_server_ready";
        case kind::fork_server_exited:
            return "fork_server_exited";
        case kind::notice:
            return "notice";
        case kind::degraded:
            return "degraded";
        case kind::recovered:
            return "recovered";
        case kind::unresponsive:
            return "unresponsive";
        case kind::memory_limit:
            return "memory_limit";
        case kind::recycled:
            return "recycled";
        case kind::poison_task:
            return "poison_task";
        case kind::events_dropped:
            return "events_dropped";
    }
    return "?";
}

std::ostream& operator<<(std::ostream& os, const notify_action& a) {
    return os << "notify{" << kind_name(a.event.what) << ", slot " << a.event.slot << ", pid "
              << a.event.pid << ", \"" << a.event.description << "\"}";
}
std::ostream& operator<<(std::ostream& os, const action& a) {
    std::visit([&os](const auto& x) { os << x; }, a);
    return os;
}

}  // namespace torchpool::core
