#include "report.hpp"

#include <torchpool/error.hpp>

#include <boost/asio/error.hpp>

namespace torchpool::core {

namespace {

std::string worker(int pid) {
    return "worker " + std::to_string(pid);
}

/// ", it held 8.0 MiB (...). The kernel showed it sleeping in ...": the end of a sentence
/// about a worker the pool gives up on.
std::string what_it_was_doing(const task_diagnostics& d) {
    return describe_memory(d.memory) + "." + describe_activity(d.activity);
}

/// "; restarting in 96 ms", "; restarted at once", ...
std::string describe_next_start(const facts::next_start& next) {
    if (next.state == child_state::starting) {
        return "; restarted at once";
    }
    if (next.state != child_state::backoff) {
        return {};
    }
    return next.at == time_point::max() ? "; restarting when its turn to start comes"
                                        : "; restarting in " + format_elapsed(next.now, next.at);
}

}  // namespace

void report::event(worker_event::kind what, slot_id slot, int pid, std::string description) {
    out_.push_back(notify_action{{what, slot, pid, std::move(description)}});
}

void report::task_failed(const boost::system::error_code& error) noexcept {
    if (error == boost::asio::error::operation_aborted) {
        ++counters_.cancelled;
    } else if (error == errc::task_failed) {
        ++counters_.task_failed;
    } else if (error == errc::timeout) {
        ++counters_.timed_out;
    } else if (error == errc::worker_died) {
        ++counters_.worker_died;
    } else if (error == errc::memory_limit) {
        ++counters_.memory_limit;
    } else if (error == errc::protocol_error) {
        ++counters_.protocol_errors;
    } else if (error == errc::poison_task) {
        ++counters_.poison_tasks;
    } else if (error == errc::overloaded) {
        ++counters_.overloaded;
    } else if (error == errc::spawn_failed) {
        ++counters_.spawn_failed;
    } else {
        ++counters_.rejected;  // shutting down, or an invalid request
    }
}

void report::apply(const facts::poison_task& f) {
    if (events_wanted_) {
        event(worker_event::kind::poison_task, f.slot, f.pid, f.summary);
    }
}

void report::apply(const facts::worker_spawned& f) {
    ++counters_.spawned;
    if (events_wanted_) {
        event(worker_event::kind::started, f.slot, f.pid, worker(f.pid) + " started");
    }
}

void report::apply(const facts::worker_ready& f) {
    counters_.start_to_ready.add(micros(f.now - f.started));
    if (!events_wanted_) {
        return;
    }
    event(worker_event::kind::ready, f.slot, f.pid,
          worker(f.pid) + " is ready, " + format_elapsed(f.started, f.now) + " after it started");
    if (f.recovered) {  // told after the readiness it follows from
        event(worker_event::kind::recovered, f.slot, f.pid,
              "the pool has recovered: " + worker(f.pid) +
                  " started and is ready, so tasks are accepted again");
    }
}

void report::apply(const facts::spawn_failed& f) {
    ++counters_.failed_starts;
    if (events_wanted_) {
        event(worker_event::kind::start_failed, f.slot, 0,
              "worker slot " + std::to_string(f.slot) + " could not be started: " + f.why +
                  describe_next_start(f.next));
    }
}

void report::apply(const facts::worker_exited& f) {
    if (events_wanted_) {
        event(worker_event::kind::exited, f.slot, f.pid,
              worker(f.pid) + " " + f.how + " while " + f.was + describe_next_start(f.next));
    }
}

void report::apply(const facts::oom_killed& f) {
    ++counters_.memory_kills;
    if (events_wanted_) {
        event(worker_event::kind::memory_limit, f.slot, f.pid,
              worker(f.pid) +
                  " was killed by the kernel's OOM killer at the limit of its memory cgroup, " +
                  format_mib(f.limit));
    }
}

void report::apply(const facts::over_memory_limit& f) {
    ++counters_.memory_kills;
    if (events_wanted_) {
        event(worker_event::kind::memory_limit, f.slot, f.pid,
              worker(f.pid) + " held " + format_mib(f.held) +
                  " of its own, over its hard limit of " + format_mib(f.limit) +
                  " (pool_params::memory.hard_limit_bytes); it was killed and will be replaced");
    }
}

void report::apply(const facts::unresponsive& f) {
    ++counters_.unresponsive;
    if (events_wanted_) {
        const auto& d = f.diagnostics;
        event(worker_event::kind::unresponsive, f.slot, d.worker_pid,
              worker(d.worker_pid) + " did not answer a heartbeat within " +
                  format_duration(f.timeout) +
                  " while idle (pool_params::heartbeat_timeout); it is stopped and replaced" +
                  what_it_was_doing(d));
    }
}

void report::apply(const facts::cancel_ignored& f) {
    if (events_wanted_) {
        const auto& d = f.diagnostics;
        event(worker_event::kind::notice, f.slot, d.worker_pid,
              worker(d.worker_pid) + " did not stop the task its caller cancelled within " +
                  format_duration(f.grace) +
                  " (pool_params::cancel_grace); it is killed and replaced" + what_it_was_doing(d));
    }
}

void report::apply(const facts::recycling& f) {
    ++counters_.recycled;
    if (events_wanted_) {
        event(worker_event::kind::recycled, f.slot, f.pid,
              worker(f.pid) + " is being replaced, since " + f.reason +
                  (f.in_place ? "; it is restarted once its task is done"
                              : "; it leaves once its replacement is ready"));
    }
}

void report::apply(const facts::degraded& f) {
    if (events_wanted_) {
        event(worker_event::kind::degraded, 0, 0,
              "the pool is degraded: " + std::to_string(f.after_failures) +
                  " starts in a row failed and no worker is ready, so tasks fail at once "
                  "until one is. Last start failure: " +
                  f.last_error);
    }
}

void report::apply(const facts::restart_paced& f) {
    if (f.paced) {
        ++counters_.paced_restarts;
    }
    if (!events_wanted_) {
        return;
    }
    if (f.began) {
        event(worker_event::kind::notice, 0, 0,
              "restart intensity reached: more than " + std::to_string(f.intensity) +
                  " restarts in " + format_duration(f.period) +
                  " (pool_params::restart_limit), so further restarts are paced to that rate");
    } else if (f.ended) {
        event(worker_event::kind::notice, 0, 0,
              "restarts are no longer paced: they came slower than the restart intensity "
              "(pool_params::restart_limit) allows");
    }
}

void report::apply(const facts::resized& f) {
    if (events_wanted_) {
        event(worker_event::kind::notice, 0, 0,
              "the pool was resized to " + std::to_string(f.workers) + " workers (pool::resize)");
    }
}

void report::apply(facts::notice f) {
    if (events_wanted_) {
        event(worker_event::kind::notice, 0, 0, std::move(f.what));
    }
}

void report::apply(const facts::fork_server_spawned& f) {
    if (events_wanted_) {
        event(worker_event::kind::fork_server_started, 0, f.pid,
              "fork server " + std::to_string(f.pid) + " started");
    }
}

void report::apply(const facts::fork_server_ready& f) {
    if (events_wanted_) {
        event(worker_event::kind::fork_server_ready, 0, f.pid,
              "fork server " + std::to_string(f.pid) + " is ready, " +
                  format_elapsed(f.started, f.now) + " after it started");
    }
}

void report::apply(facts::fork_server_exited f) {
    if (events_wanted_) {
        event(worker_event::kind::fork_server_exited, 0, f.pid, std::move(f.why));
    }
}

}  // namespace torchpool::core
