#include "fork_server.hpp"

namespace torchpool::core {

fork_server_supervisor::fork_server_supervisor(const pool_params& params, report& report,
                                               action_queue& out)
    : spawn_timeout_(params.spawn_timeout),
      load_timeout_(params.load_timeout),
      stop_grace_(params.stop_grace),
      healthy_after_(params.restart_backoff.reset_after),
      enabled_(params.worker.start == start_mode::fork_server),
      child_(0, enabled_ ? params.log_tail_bytes : 4096, nullptr),
      load_(params.load_extensions),
      report_(report),
      out_(out) {}

void fork_server_supervisor::start(bool pool_stopping, time_point now) {
    if (!enabled_ || stopped() || pool_stopping) {
        return;
    }
    child_.begin_start(now, now + spawn_timeout_);
    load_.reset();
    report_.apply(facts::fork_server_starting{});
    out_.push_back(start_server_action{});
}

void fork_server_supervisor::stop(bool kill, time_point now) {
    if (!enabled_) {
        return;
    }
    switch (child_.stop(stop_reason::shutdown, kill, now, stop_grace_)) {
        case stop_step::none:
            break;
        case stop_step::ask:
            out_.push_back(stop_server_action{false});
            break;
        case stop_step::kill:
            out_.push_back(stop_server_action{true});
            break;
    }
}

void fork_server_supervisor::kill_because(std::string reason, time_point now) {
    kill_reason_ = std::move(reason);
    stop(true, now);
}

void fork_server_supervisor::spawned(int pid, time_point now) {
    child_.spawned(pid, now);
    child_.set_timer(timer_purpose::start_deadline, now + load_timeout_);
    report_.apply(facts::fork_server_spawned{.pid = pid});
}

std::optional<std::string> fork_server_supervisor::hello(const wire::hello_msg& hello,
                                                         time_point now) {
    if (child_.state() != child_state::starting) {
        return ready() ? second_hello() : hello_while_stopping();
    }
    if (hello.protocol_version != wire::protocol_version) {
        return other_protocol_version(hello.protocol_version, wire::protocol_version);
    }
    child_.became_ready(now);
    report_.apply(facts::fork_server_ready{
        .pid = child_.pid(), .started = child_.process_start(), .now = now});
    return std::nullopt;
}

bool fork_server_supervisor::protocol_error(std::string what, time_point now) {
    const auto state = child_.state();
    if (!enabled_ || state == child_state::stopping || state == child_state::stopped) {
        return false;
    }
    report_.apply(facts::fork_server_protocol_error{});
    kill_because(killed_for(std::move(what)), now);
    return true;
}

std::string fork_server_supervisor::describe_end(const exit_status& status, time_point now) const {
    return fork_server_end(child_.pid(), kill_reason_, describe_exit(status),
                           child_.state() == child_state::starting, child_.process_start(), now,
                           child_.log().text());
}

std::string fork_server_supervisor::describe_spawn_error(const std::string& why) {
    kill_reason_.clear();
    return fork_server_not_started(why);
}

fork_server_supervisor::end fork_server_supervisor::gone(std::string why, bool pool_stopping,
                                                         time_point now) {
    const child_state was = child_.state();
    const int pid = child_.pid();
    const bool asked = child_.asked_to_stop();
    const bool unexpected = kill_reason_.empty() && !asked && !child_.killed();
    if (was == child_state::running && unexpected && !pool_stopping) {
        child_.count_failure(now, healthy_after_);
    }
    child_.process_gone();
    child_.clear_timer();
    kill_reason_.clear();
    if (pid != 0) {
        report_.apply(facts::fork_server_exited{.pid = pid, .why = std::move(why)});
    }
    if (pool_stopping || asked) {
        child_.retire();  // the pool is done with it
        return {.for_good = true, .was_failed_start = false};
    }
    child_.wait_for_turn();
    if (was == child_state::running && unexpected) {
        report_.apply(facts::fork_server_died{});
        return {.for_good = false, .was_failed_start = false};
    }
    return {.for_good = false, .was_failed_start = was == child_state::starting || !unexpected};
}

void fork_server_supervisor::restart_at(time_point at, time_point now) {
    if (at <= now) {
        start(false, now);
    } else {
        child_.restart_at(at);
    }
}

void fork_server_supervisor::on_timer(bool pool_stopping, const cpu_probe& cpu_time,
                                      time_point now) {
    if (child_.timer() > now) {
        return;
    }
    switch (child_.due()) {
        case timer_purpose::start_deadline:
            if (child_.pid() != 0 && cpu_time && load_.extend(cpu_time(child_.pid()))) {
                report_.apply(facts::load_extended{});
                // Loading, and computing: more time.
                child_.set_timer(timer_purpose::start_deadline, now + load_timeout_);
                break;
            }
            kill_because(child_.pid() == 0 ? not_started_in_time(spawn_timeout_)
                                           : not_ready_in_time(load_timeout_, load_),
                         now);
            break;
        case timer_purpose::restart:
            child_.clear_timer();
            start(pool_stopping, now);
            break;
        case timer_purpose::stop_grace:
            stop(true, now);
            break;
        default:  // nothing else is set on the fork server
            child_.clear_timer();
            break;
    }
}

}  // namespace torchpool::core
