// The fork server's lifecycle (start_mode::fork_server): started before any worker, ready
// once it said hello, killed when it stays silent past load_timeout or breaks its protocol,
// restarted with backoff when it dies (the workers it made carry on), asked to stop last.
// What its end means for the workers that were asked of it is the pool's to decide.
#pragma once

#include "../wire/messages.hpp"
#include "actions.hpp"
#include "load_progress.hpp"
#include "report.hpp"
#include "supervised_child.hpp"
#include <torchpool/pool_params.hpp>

#include <chrono>
#include <functional>
#include <optional>
#include <string>

namespace torchpool::core {

class fork_server_supervisor {
public:
    fork_server_supervisor(const pool_params& params, report& report, action_queue& out);

    /// Fork-server mode: workers are asked of the server.
    bool enabled() const noexcept { return enabled_; }
    bool ready() const noexcept { return child_.state() == child_state::running; }
    bool stopped() const noexcept { return child_.state() == child_state::stopped; }
    const supervised_child& child() const noexcept { return child_; }

    /// Starts its process, unless it has stopped for good or the pool is stopping.
    void start(bool pool_stopping, time_point now);
    /// Asks it to exit (SIGKILL after stop_grace), or kills it at once.
    void stop(bool kill, time_point now);
    /// Kills it; `reason` (a verb phrase) says why, in the sentence that reports its end.
    void kill_because(std::string reason, time_point now);

    void spawned(int pid, time_point now);
    /// Its hello; returns the protocol problem if it cannot be accepted (nothing changed).
    std::optional<std::string> hello(const wire::hello_msg& hello, time_point now);
    /// It broke its protocol: it is killed. False if it was on its way out already.
    bool protocol_error(std::string what, time_point now);
    void log(std::string_view bytes) { child_.append_log(bytes); }
    /// The sentence that says how its process ended.
    std::string describe_end(const exit_status& status, time_point now) const;
    /// The sentence for a process that could not be started at all.
    std::string describe_spawn_error(const std::string& why);

    struct end {
        bool for_good;          ///< it is not restarted (the pool stops, or asked it to exit)
        bool was_failed_start;  ///< it never became ready, or was killed by the pool
    };
    /// Its process is gone (`why` in words, for the event). Unless for good, it waits in
    /// backoff for `restart_at`.
    end gone(std::string why, bool pool_stopping, time_point now);
    /// Counts a start that never became ready; returns the count in a row.
    unsigned count_failed_start() { return child_.count_failed_start(); }
    /// Starts again at `at` (at once if that is not later than `now`).
    void restart_at(time_point at, time_point now);

    /// The CPU time process `pid` has used, if known.
    using cpu_probe = std::function<std::optional<std::chrono::nanoseconds>(int pid)>;
    /// Its timer is due: a start that took too long (unless it used CPU since the last look:
    /// load_progress), a restart, or a stop past its grace.
    void on_timer(bool pool_stopping, const cpu_probe& cpu_time, time_point now);

private:
    std::chrono::milliseconds spawn_timeout_;
    std::chrono::milliseconds load_timeout_;
    std::chrono::milliseconds stop_grace_;
    std::chrono::milliseconds healthy_after_;
    bool enabled_;
    supervised_child child_;
    load_progress load_;
    std::string kill_reason_;  // why the pool killed it, if it did (a verb phrase)
    report& report_;
    action_queue& out_;
};

}  // namespace torchpool::core
