// The lifecycle of one supervised child process, a worker or the fork server: it waits for
// its start, starts, becomes ready, is asked to stop or killed, and is restarted after a
// backoff or retired for good. Its state and its one timer change only in these transitions,
// and each change is told to an observer, which keeps what the pool derives from them right
// (the idle list, the index of timers, the count of starts in progress). The timer is typed:
// it says what is due, so whoever handles it needs no other state to tell.
#pragma once

#include "log_tail.hpp"
#include "types.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace torchpool::core {

enum class child_state {
    backoff,   ///< no process; waits for its restart time, or for its turn to start
    starting,  ///< being started, or started and not ready (no hello yet)
    running,   ///< ready: said hello
    stopping,  ///< asked or forced to exit; its exit has not been reaped
    stopped,   ///< no process, and none will be started
};

const char* to_string(child_state s) noexcept;

/// What a child's timer is for.
enum class timer_purpose : std::uint8_t {
    none,            ///< nothing is due
    restart,         ///< in backoff: its restart time
    start_deadline,  ///< starting: to have a process (spawn_timeout), then to be ready
    stop_grace,      ///< asked to exit: killed if it has not by then
    cancel_grace,    ///< its running task was cancelled: killed if it has not answered by then
    channel_grace,   ///< its channel ended: it must have exited by then
};

const char* to_string(timer_purpose p) noexcept;

/// What stopping a child asks of the driver.
enum class stop_step {
    none,  ///< nothing: already on its way out, or no process to stop
    ask,   ///< ask it to exit (SIGTERM, a shutdown message, end of its control stream)
    kill,  ///< SIGKILL
};

class supervised_child {
public:
    /// Told of every change of a child's state or timer, after it happened.
    class observer {
    public:
        virtual void on_child_state(std::size_t id, child_state from, child_state to) = 0;
        virtual void on_child_timer(std::size_t id, time_point from, time_point to) = 0;

    protected:
        ~observer() = default;
    };

    /// `obs` may be null: nothing is derived from this child's state.
    supervised_child(std::size_t id, std::size_t log_bytes, observer* obs)
        : id_(id), log_(log_bytes), observer_(obs) {}

    std::size_t id() const noexcept { return id_; }
    child_state state() const noexcept { return state_; }
    int pid() const noexcept { return pid_; }
    /// When something is due (see due()); max if nothing.
    time_point timer() const noexcept { return timer_; }
    /// What is due at timer().
    timer_purpose due() const noexcept { return due_; }
    time_point process_start() const noexcept { return process_start_; }
    stop_reason reason() const noexcept { return reason_; }
    bool killed() const noexcept { return killed_; }
    /// Asked to exit (not killed) by the pool since it started.
    bool asked_to_stop() const noexcept { return asked_to_stop_; }
    bool ever_started() const noexcept { return ever_started_; }
    /// Being started with no process yet (a worker asked of the fork server).
    bool awaiting_process() const noexcept { return state_ == child_state::starting && pid_ == 0; }
    const log_tail& log() const noexcept { return log_; }
    void append_log(std::string_view bytes) { log_.append(bytes); }

    /// Failures (deaths, protocol errors, failed starts) since it was last healthy: what
    /// the restart backoff grows with.
    unsigned failures() const noexcept { return failures_; }
    /// Starts in a row that never became ready.
    unsigned failed_starts() const noexcept { return failed_starts_; }
    /// Counts a death or protocol error of its process at `now`. A child that had been
    /// ready for `healthy_after` was healthy: the count starts over before this one.
    void count_failure(time_point now, clock::duration healthy_after) noexcept {
        if (state_ == child_state::running && now - ready_since_ >= healthy_after) {
            failures_ = 0;
        }
        ++failures_;
    }
    /// It did its work (answered a task): its failures are forgotten.
    void healthy() noexcept { failures_ = 0; }
    /// Counts a start that never became ready; returns the count in a row.
    unsigned count_failed_start() noexcept {
        ++failures_;
        return ++failed_starts_;
    }
    /// When it became ready (said hello).
    time_point ready_since() const noexcept { return ready_since_; }

    // Transitions.

    /// No process; waits for its turn to start (no timer).
    void wait_for_turn() {
        set_state(child_state::backoff);
        clear_timer();
    }
    /// No process; restarts at `at`.
    void restart_at(time_point at) {
        set_state(child_state::backoff);
        set_timer(timer_purpose::restart, at);
    }
    /// Its process is being started now; it must be ready by `give_up_at`.
    void begin_start(time_point now, time_point give_up_at);
    /// The process exists.
    void spawned(int pid, time_point now) {
        pid_ = pid;
        process_start_ = now;
    }
    /// It said hello.
    void became_ready(time_point now) {
        set_state(child_state::running);
        clear_timer();
        failed_starts_ = 0;
        ready_since_ = now;
    }
    /// Stops it: asks (with `grace` until it is killed) or kills. A child already stopping is
    /// only escalated to a kill; one without a process is retired.
    stop_step stop(stop_reason why, bool force, time_point now, clock::duration grace);
    /// Its process was reaped (or never came): what belonged to that process is cleared.
    void process_gone() noexcept {
        pid_ = 0;
        killed_ = false;
        asked_to_stop_ = false;
    }
    /// Stopped for good.
    void retire() {
        set_state(child_state::stopped);
        clear_timer();
    }
    /// `what` is due at `at`, instead of what was.
    void set_timer(timer_purpose what, time_point at);
    /// `what` is due at `at`, if that is sooner than what is due now.
    void set_timer_if_sooner(timer_purpose what, time_point at) {
        if (at < timer_) {
            set_timer(what, at);
        }
    }
    void clear_timer() { set_timer(timer_purpose::none, time_point::max()); }

private:
    void set_state(child_state to);

    std::size_t id_;
    child_state state_ = child_state::backoff;
    int pid_ = 0;
    time_point timer_ = time_point::max();
    timer_purpose due_ = timer_purpose::none;
    time_point process_start_{};
    time_point ready_since_{};
    stop_reason reason_ = stop_reason::none;
    unsigned failures_ = 0;
    unsigned failed_starts_ = 0;
    bool killed_ = false;
    bool asked_to_stop_ = false;
    bool ever_started_ = false;
    log_tail log_;
    observer* observer_;
};

}  // namespace torchpool::core
