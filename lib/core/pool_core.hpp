// The pool's decisions, without I/O: worker states, dispatch, deadlines, restarts,
// shutdown. It takes events (a worker said hello, a reply came, a process exited, time
// passed) and returns actions (start a process, send a request, signal a worker, complete
// a task). The Asio driver (lib/pool.cpp) maps actions to system calls; tests drive it
// directly with a simulated clock.
#pragma once

#include "../wire/messages.hpp"
#include "backoff.hpp"
#include "log_tail.hpp"
#include <torchpool/events.hpp>
#include <torchpool/pool_params.hpp>
#include <torchpool/stats.hpp>
#include <torchpool/task.hpp>

#include <boost/asio/cancellation_type.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

namespace torchpool::core {

using clock = std::chrono::steady_clock;
using time_point = clock::time_point;
using task_id = std::uint64_t;
using slot_id = std::size_t;

enum class worker_state {
    backoff,   ///< no process; waiting until its restart time (or until the pool starts)
    starting,  ///< process started, not ready (no hello yet)
    idle,      ///< ready, no task
    busy,      ///< running one task
    stopping,  ///< asked or forced to exit; waiting for the exit to be reaped
    stopped,   ///< no process, and none will be started (the pool is stopping)
};

const char* to_string(worker_state s) noexcept;

struct exit_status;
/// "was killed by signal SIGSEGV (core dumped)", "exited with code 3", ...
std::string describe_exit(const exit_status& status);

/// How a reaped process ended.
struct exit_status {
    std::optional<int> exit_code;
    std::optional<int> signal;
    bool core_dumped = false;
    std::optional<std::uint64_t> peak_rss_bytes;
};

// Actions, for the driver.
/// Start a worker process for `slot` (direct mode: fork + exec).
struct spawn_action {
    slot_id slot;
};
/// Ask the fork server for a worker for `slot` (fork-server mode).
struct fork_action {
    slot_id slot;
};
/// Start the fork server.
struct start_server_action {};
/// Stop the fork server: ask it to exit (shutdown message), or SIGKILL it.
struct stop_server_action {
    bool kill = false;
};
struct send_request_action {
    slot_id slot;
    task_id task;
};
struct send_shutdown_action {
    slot_id slot;
};
struct send_cancel_action {
    slot_id slot;
    task_id task;
};
struct signal_action {
    slot_id slot;
    int signo;
};
struct complete_action {
    task_id task;
    boost::system::error_code error;
    // Shared, so that passing it along to the caller's handler moves a pointer, not the
    // strings of a response and its diagnostics.
    std::shared_ptr<response> result;
};
struct run_finished_action {};
struct notify_action {
    worker_event event;
};

using action = std::variant<spawn_action, fork_action, start_server_action, stop_server_action,
                            send_request_action, send_shutdown_action, send_cancel_action,
                            signal_action, complete_action, run_finished_action, notify_action>;

class pool_core {
public:
    explicit pool_core(const pool_params& params);

    // Events from the owner of the pool.

    /// Starts every worker. Returns false if the pool was already started or stopped.
    bool start(time_point now);
    /// The deadline a task gets: the one it asked for, else the pool's default (zero: none).
    std::chrono::milliseconds timeout_for(std::chrono::milliseconds requested) const;
    /// A new task, with the timeout from `timeout_for` (zero: no deadline). Completes it at
    /// once (as an action) if it cannot be admitted.
    void submit(task_id id, std::string method, std::chrono::milliseconds timeout, time_point now);
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

    /// Time passed; call at or after `next_deadline()`.
    void on_timer(time_point now);

    /// When `on_timer` must be called next, if ever.
    std::optional<time_point> next_deadline() const;

    /// Actions produced by the events so far, oldest first. The caller pops them.
    std::deque<action>& actions() noexcept { return actions_; }

    pool_stats stats() const;
    worker_state state_of(slot_id slot) const { return slots_.at(slot).state; }
    bool finished() const noexcept { return finished_; }
    bool fork_server_mode() const noexcept { return server_.state != server_state::none; }

private:
    enum class stop_reason {
        none,
        deadline,
        protocol,
        cancelled,
        spawn_timeout,
        shutdown,
        pool_stop
    };

    // A request written to a worker. Workers handle requests one at a time, in order, and
    // reply to each; so the first one is running and the others (prefetched) have not
    // started. An abandoned one (timed out or cancelled before it started) still gets its
    // reply, which is dropped.
    struct sent_task {
        task_id id;
        bool abandoned = false;
    };

    struct slot {
        explicit slot(std::size_t log_bytes) : log(log_bytes) {}
        worker_state state = worker_state::backoff;
        int pid = 0;
        std::deque<sent_task> sent;
        time_point process_start{};
        time_point task_start{};
        // Spawn deadline, restart time, SIGKILL time or channel-closed grace; set only
        // through set_timer.
        time_point timer = time_point::max();
        unsigned failures = 0;       // deaths and protocol errors since its last good reply
        unsigned failed_starts = 0;  // starts in a row that never became ready
        stop_reason reason = stop_reason::none;
        bool killed = false;  // SIGKILL sent
        bool ever_started = false;
        bool waiting = false;  // in start_queue_, for its turn to start (state backoff)
        std::optional<std::string> channel_closed;  // how its channel ended, if it has
        log_tail log;
    };

    struct task {
        std::string method;
        time_point submitted;
        time_point deadline = time_point::max();
        std::optional<slot_id> slot;
    };

    enum class server_state {
        none,      ///< direct mode: no fork server
        backoff,   ///< not running; started at `timer`, or when the pool starts
        starting,  ///< process started, no hello yet
        ready,     ///< makes workers on request
        stopping,  ///< asked or forced to exit; waiting for the exit to be reaped
        stopped,   ///< not running, and will not be started again
    };

    struct fork_server {
        server_state state = server_state::none;
        int pid = 0;
        time_point process_start{};
        time_point timer = time_point::max();
        unsigned failed_starts = 0;  // starts in a row that never became ready
        unsigned failures = 0;       // deaths since it was last ready (restart backoff)
        bool killed = false;
        bool asked_to_stop = false;
        std::string kill_reason;  // why the pool killed it, if it did (a verb phrase)
        log_tail log{4096};
    };

    /// A slot needs a process: it waits for its turn (start_queue_) and the fork server.
    void spawn(slot_id s, time_point now);
    /// Starts waiting slots while starts are allowed.
    void start_waiting(time_point now);
    /// The slot's process is being started now.
    void begin_start(slot_id s, time_point now);
    std::size_t starts_in_progress() const;
    void start_server(time_point now);
    void stop_server(bool kill, time_point now);
    void requeue_fork_requests(time_point now);
    void on_server_gone(std::string why, time_point now);
    /// The only way to change a slot's timer, so that slot_timers_ stays in step.
    void set_timer(slot_id s, time_point at);
    std::optional<task_id> running_task(const slot& w) const;
    std::optional<slot_id> prefetch_target();
    void release_sent(slot_id s);
    void dispatch(time_point now);
    void complete(task_id id, boost::system::error_code error, response result);
    void stop_worker(slot_id s, stop_reason reason, bool force, time_point now);
    void schedule_restart(slot_id s, time_point now);
    void fail_queued(boost::system::error_code error, const std::string& summary);
    void after_failed_start(slot_id s, std::string why);
    void count_failed_start(unsigned& failed_starts, std::string why);
    void maybe_finish_drain(time_point now);
    void check_finished(time_point now);
    void notify(worker_event::kind what, slot_id s, std::string description);
    void on_hello(slot_id s, const wire::hello_msg& hello, time_point now);
    void on_reply(slot_id s, wire::reply_msg&& reply, time_point now);
    void complete_reply(slot_id s, task_id id, wire::reply_msg&& reply, time_point now);
    bool ready_workers_exist() const;
    task_diagnostics worker_diagnostics(const slot& w, time_point now) const;
    std::string describe_task(task_id id) const;
    void forget_task(task_id id);

    pool_params params_;
    random_source random_;
    std::vector<slot> slots_;
    std::unordered_map<task_id, task> tasks_;
    std::deque<task_id> queue_;  // may hold ids that already left; skipped on pop
    std::size_t queued_ = 0;     // tasks in tasks_ without a slot
    std::set<std::pair<time_point, task_id>> deadlines_;
    std::set<std::pair<time_point, slot_id>> slot_timers_;  // slots whose timer is set
    std::vector<slot_id> idle_;
    std::deque<slot_id> start_queue_;  // slots waiting for their turn; may hold stale ids
    fork_server server_;
    slot_id prefetch_cursor_ = 0;
    std::deque<action> actions_;

    bool started_ = false;
    bool draining_ = false;
    bool stopping_ = false;
    bool finished_ = false;
    bool degraded_ = false;
    std::string last_spawn_error_;
    pool_stats counters_;  // counts only; the rest is filled in by stats()
};

}  // namespace torchpool::core
