// The pool's decisions, without I/O: a router over the core's units. It takes events (a
// worker said hello, a reply came, a process exited, time passed), hands each to the unit
// that owns what it touches, carries out what one unit's outcome asks of another (a worker's
// end: its task fails, its start failed), and hands the actions for the Asio driver
// (lib/driver/pool_impl.cpp) back. Tests drive it directly with a simulated clock. Its code:
// pool_core.cpp (tasks, messages, time) and pool_core_lifecycle.cpp (start, the fork server's
// events, exits, shutdown and stop).
//
// The units that act, each over the state units below:
//   worker_lifecycle   a slot's process: its turn, start, load, hello, stop, exit, restart
//   task_flow          a task's way: admission, dispatch, answer, cancellation, deadline, a
//                      failure under it (retry, poison); the one place a task completes
//   health_checks      heartbeats and memory limits, carried out
//   shutdown_sequence  how a run ends: drain or stop, then finish (the fork server last)
// Each state has one writer:
//   supervised_child   one process's lifecycle and its typed timer, worker or fork server
//   worker_set         each slot's status (set_status and its hooks: idle list, start gate,
//                      counts by status) and the index of worker timers
//   task_table         tasks, the queue, deadlines, who was sent what, a task's failures;
//                      a task ends in end(id)
//   slot_policy        which slots hold workers: growth, shrinking, resize, recycling and its
//                      hand-over (over sizing); returns slot commands
//   fork_server        the fork server's lifecycle
//   memory_watch       which worker's memory to read, its readings, and what a figure means
//   heartbeat          heartbeats to idle workers, and which are unresponsive
//   restart_policy     backoff, restart intensity, and when the pool is degraded
//   pool_phase         running, draining, stopping, finished
//   quarantine         fingerprints of poison tasks
// Pure decisions: dispatch (admission, which worker), start_gate (which slot starts),
// retry_policy (after a worker failed under a task). Reading processes: inspector. Telling:
// units state facts (facts.hpp); report alone counts and emits events, in wording.hpp's words.
#pragma once

#include "../wire/messages.hpp"
#include "actions.hpp"
#include "dispatch.hpp"
#include "fork_server.hpp"
#include "health_checks.hpp"
#include "heartbeat.hpp"
#include "inspector.hpp"
#include "memory_watch.hpp"
#include "pool_phase.hpp"
#include "quarantine.hpp"
#include "report.hpp"
#include "restart_policy.hpp"
#include "shutdown_sequence.hpp"
#include "sizing.hpp"
#include "slot_policy.hpp"
#include "start_gate.hpp"
#include "supervised_child.hpp"
#include "task_flow.hpp"
#include "task_table.hpp"
#include "types.hpp"
#include "worker_lifecycle.hpp"
#include "worker_set.hpp"
#include <torchpool/error.hpp>
#include <torchpool/pool_params.hpp>
#include <torchpool/stats.hpp>
#include <torchpool/task.hpp>

#include <boost/asio/cancellation_type.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace torchpool::core {

class pool_core final {
public:
    /// Reads live processes (injected: /proc in the driver, fakes in tests).
    using process_probe = core::process_probe;

    explicit pool_core(const pool_params& params, process_probe probe = {});
    // Its units hold references into it.
    pool_core(const pool_core&) = delete;
    pool_core& operator=(const pool_core&) = delete;

    // Events from the owner of the pool.

    /// Starts every worker. Returns false if the pool was already started or stopped.
    bool start(time_point now);
    /// A new task, with its timeout resolved already (the driver's intake: zero is no
    /// deadline). Completes it at once (as an action) if it cannot be admitted.
    void submit(task_id id, std::string method, const task_options& options, time_point now);
    void submit(task_id id, std::string method, std::chrono::milliseconds timeout, time_point now) {
        submit(id, std::move(method), task_options{.timeout = timeout}, now);
    }
    /// Whether a task with `retries` needs its fingerprint: it may become a poison task, or
    /// poison tasks are quarantined.
    bool needs_fingerprint(unsigned retries) const noexcept {
        return needs_fingerprint(params_, retries, !quarantine_.empty());
    }
    /// The same, for a caller off the pool's executor that mirrors `quarantining()`.
    static bool needs_fingerprint(const pool_params& params, unsigned retries,
                                  bool quarantining) noexcept {
        return (params.poison.deaths > 0 && retries + 1 >= params.poison.deaths) || quarantining;
    }
    bool quarantining() const noexcept { return !quarantine_.empty(); }
    /// Completes a task that was never admitted (invalid request), and counts it.
    void reject(task_id id, boost::system::error_code error, std::string summary);
    /// The caller of a task asked to cancel it.
    void cancel_task(task_id id, boost::asio::cancellation_type type, time_point now);
    /// Graceful stop: refuse new tasks, finish the admitted ones, stop the workers.
    void shutdown(time_point now);
    /// Immediate stop: abort every task, kill every worker.
    void stop(time_point now);

    // Events from workers.

    /// The process of `slot` was started.
    void on_spawned(slot_id slot, int pid, time_point now);
    /// The process of `slot` could not be started at all (fork or exec setup failed).
    void on_spawn_error(slot_id slot, std::string why, time_point now);
    /// Something the host should know about the pool as a whole (a `notice` event).
    void note(std::string what);
    void on_message(slot_id slot, wire::message&& msg, time_point now);
    /// The worker broke the protocol; `what` is a verb phrase ("sent a malformed message:
    /// ..."), used in the task's diagnostics.
    void on_protocol_error(slot_id slot, std::string what, time_point now);
    /// The worker's channel reached end of stream (`what` says how). Its exit is awaited for
    /// `stop_grace`; a worker still running after that is killed as a protocol failure.
    void on_channel_closed(slot_id slot, std::string what, time_point now);
    /// The worker wrote to its stdout or stderr.
    void on_log(slot_id slot, std::string_view bytes);
    /// The process of `slot` was reaped.
    void on_exit(slot_id slot, const exit_status& status, time_point now);

    // Events from the fork server (start_mode::fork_server).

    /// The fork server process was started.
    void on_server_spawned(int pid, time_point now);
    /// The fork server process could not be started at all.
    void on_server_spawn_error(std::string why, time_point now);
    /// The fork server said hello: it can make workers.
    void on_server_hello(const wire::hello_msg& hello, time_point now);
    /// The fork server broke its protocol (`what` is a verb phrase, as for workers).
    void on_server_protocol_error(std::string what, time_point now);
    void on_server_log(std::string_view bytes);
    /// The fork server was reaped.
    void on_server_exit(const exit_status& status, time_point now);
    /// True while `slot` waits for the worker it asked the fork server for: a worker the
    /// fork server hands over for any other slot is not wanted (kill it).
    bool awaiting_fork(slot_id slot) const;

    /// The pool's size becomes `workers` (within the slots it has); returns the size set.
    std::size_t resize(std::size_t workers, time_point now);

    /// Time passed; call at or after `next_deadline()`.
    void on_timer(time_point now);

    /// When `on_timer` must be called next, if ever.
    std::optional<time_point> next_deadline() const;

    /// Actions produced by the events so far, oldest first. The caller pops them.
    action_queue& actions() noexcept { return actions_; }

    pool_stats stats() const;
    /// What health is derived from, cheap enough to read after every event.
    struct health_inputs {
        bool running = false;    ///< started and not finished
        bool admitting = false;  ///< not draining or stopping
        bool degraded = false;
        std::size_t ready_workers = 0;
    };
    health_inputs health() const noexcept {
        return {.running = phase_.started() && !phase_.finished(),
                .admitting = phase_.admitting(),
                .degraded = restart_.degraded(),
                .ready_workers = workers_.ready_count()};
    }
    worker_state state_of(slot_id slot) const;
    /// The worker slots, read-only (for tests of what is derived from their statuses).
    const worker_set& workers() const noexcept { return workers_; }
    bool finished() const noexcept { return phase_.finished(); }
    bool fork_server_mode() const noexcept { return server_.enabled(); }
    int fork_server_pid() const noexcept { return server_.child().pid(); }
    /// The method of a task that has not completed; empty if none.
    std::string_view method_of(task_id id) const {
        const auto* t = tasks_.find(id);
        return t ? std::string_view(t->method) : std::string_view();
    }

private:
    void server_gone(std::string why, time_point now);
    /// Sends queued tasks to workers; more workers start if tasks still wait.
    void dispatch(time_point now);
    /// What a worker's end leaves: its task fails (or runs again), its start failed.
    void carry_out(slot_id s, worker_end& end, time_point now);
    /// A start that never became ready, of a worker or of the fork server (`why`, a
    /// sentence): the pool may be degraded now.
    void start_failed(std::string why, time_point now);
    /// What follows every event that may end a start, a task or a process.
    void settle(time_point now);
    void on_hello(slot_id s, const wire::hello_msg& hello, time_point now);
    void on_reply(slot_id s, wire::reply_msg&& reply, time_point now);
    /// Tasks wait and no worker is free: start more, up to max_workers.
    void maybe_grow(time_point now);

    pool_params params_;
    action_queue actions_;
    report report_;
    restart_policy restart_;
    pool_phase phase_;
    task_table tasks_;
    worker_set workers_;
    heartbeat_monitor heartbeat_;
    memory_watch memory_;
    inspector inspect_;
    slot_policy slots_;
    fork_server_supervisor server_;
    quarantine quarantine_;
    worker_lifecycle lifecycle_;  // over the units above
    task_flow flow_;
    health_checks health_;
    shutdown_sequence ending_;
};

// Read after every event (the driver re-arms its timer), so inline.
inline std::optional<time_point> pool_core::next_deadline() const {
    time_point next = server_.child().timer();
    if (const auto task_deadline = tasks_.next_deadline()) {
        next = std::min(next, *task_deadline);
    }
    if (const auto worker_timer = workers_.next_timer()) {
        next = std::min(next, *worker_timer);
    }
    if (const auto sweep = heartbeat_.next_sweep()) {
        next = std::min(next, *sweep);
    }
    if (const auto sample = memory_.next_sample()) {
        next = std::min(next, *sample);
    }
    if (const auto housekeeping = slots_.next_housekeeping()) {
        next = std::min(next, *housekeeping);
    }
    if (next == time_point::max()) {
        return std::nullopt;
    }
    return next;
}

}  // namespace torchpool::core
