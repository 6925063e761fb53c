// The report: the one place that turns what the pool's units state (facts.hpp) into what
// people and monitors read. It keeps the counters behind pool::stats(), emits worker events
// for the host's observer, and words them (wording.hpp). No unit decides anything here, and
// no other unit counts or emits an event.
#pragma once

#include "actions.hpp"
#include "facts.hpp"
#include "types.hpp"
#include "wording.hpp"
#include <torchpool/events.hpp>
#include <torchpool/stats.hpp>

#include <boost/system/error_code.hpp>

#include <chrono>
#include <string>

namespace torchpool::core {

class report {
public:
    report(bool events_wanted, action_queue& out) : events_wanted_(events_wanted), out_(out) {}

    /// Counts by outcome and cause, since the pool was made (pool_stats' history fields).
    const pool_stats& counters() const noexcept { return counters_; }

    /// A task ended with `error` (none: it succeeded): counted by its outcome, here only.
    void task_ended(const boost::system::error_code& error) noexcept {
        if (!error) {
            ++counters_.succeeded;  // the common case, inline
        } else {
            task_failed(error);
        }
    }

    // Tasks: on every task's path, so inline.
    void apply(facts::task_submitted) noexcept { ++counters_.submitted; }
    void apply(facts::task_sent f) noexcept { counters_.queue_wait.add(micros(f.queue_wait)); }
    void apply(facts::task_answered f) noexcept { counters_.run_time.add(micros(f.run_time)); }
    void apply(facts::task_quarantined) noexcept { ++counters_.quarantined; }
    void apply(facts::task_waits_for_room) noexcept { ++counters_.waited_for_room; }
    void apply(facts::task_retried) noexcept { ++counters_.retried; }
    void apply(const facts::poison_task& f);

    // Worker processes.
    void apply(facts::worker_restarting) noexcept { ++counters_.restarts; }
    void apply(const facts::worker_spawned& f);
    void apply(const facts::worker_ready& f);
    void apply(facts::load_extended) noexcept { ++counters_.load_extensions; }
    void apply(facts::start_failed) noexcept { ++counters_.failed_starts; }
    void apply(const facts::spawn_failed& f);
    void apply(facts::worker_died f) noexcept {
        ++(f.by_signal ? counters_.deaths_by_signal : counters_.deaths_by_exit);
    }
    void apply(const facts::worker_exited& f);
    void apply(const facts::oom_killed& f);
    void apply(const facts::over_memory_limit& f);
    void apply(facts::killed_by_pool) noexcept { ++counters_.killed_by_pool; }
    void apply(const facts::unresponsive& f);
    void apply(const facts::cancel_ignored& f);
    void apply(const facts::recycling& f);

    // The pool.
    void apply(const facts::degraded& f);
    void apply(const facts::restart_paced& f);
    void apply(const facts::resized& f);
    void apply(facts::notice f);

    // The fork server.
    void apply(facts::fork_server_starting) noexcept { ++counters_.fork_server_starts; }
    void apply(const facts::fork_server_spawned& f);
    void apply(const facts::fork_server_ready& f);
    void apply(facts::fork_server_protocol_error) noexcept { ++counters_.protocol_errors; }
    void apply(facts::fork_server_exited f);
    void apply(facts::fork_server_died) noexcept { ++counters_.fork_server_deaths; }

private:
    static std::chrono::microseconds micros(clock::duration d) noexcept {
        return std::chrono::duration_cast<std::chrono::microseconds>(d);
    }
    void task_failed(const boost::system::error_code& error) noexcept;
    /// Emits an event for the host's observer, if it has one.
    void event(worker_event::kind what, slot_id slot, int pid, std::string description);

    pool_stats counters_;
    bool events_wanted_;
    action_queue& out_;
};

}  // namespace torchpool::core
