// The pool core's worker and fork-server lifecycles: starts, restarts, exits and stops
// (see pool_core.hpp).
#include "pool_core.hpp"
#include <torchpool/error.hpp>

#include <boost/asio/error.hpp>

namespace torchpool::core {

// --- starts ------------------------------------------------------------------------------

bool pool_core::start(time_point now) {
    if (!phase_.start()) {
        return false;
    }
    server_.start(false, now);
    heartbeat_.start(now);
    memory_.start(now);
    lifecycle_.park_all();  // until the pool uses the slot
    lifecycle_.carry_out(slots_.start(now), now);
    return true;
}

bool pool_core::awaiting_fork(slot_id s) const {
    return lifecycle_.awaiting_fork(s);
}

void pool_core::on_spawned(slot_id s, int pid, time_point now) {
    lifecycle_.spawned(s, pid, now);
}

void pool_core::on_spawn_error(slot_id s, std::string why, time_point now) {
    lifecycle_.spawn_failed(s);
    start_failed(std::move(why), now);
    lifecycle_.after_exit(s, now);
    report_.apply(facts::spawn_failed{
        .slot = s, .why = restart_.last_error(), .next = lifecycle_.next_start(s, now)});
    settle(now);
}

void pool_core::note(std::string what) {
    report_.apply(facts::notice{std::move(what)});
}

void pool_core::start_failed(std::string why, time_point now) {
    if (!restart_.start_failed(std::move(why), workers_.any_ready(), now)) {
        return;
    }
    report_.apply(facts::degraded{.after_failures = params_.spawn_failures_until_degraded,
                                  .last_error = restart_.last_error()});
    flow_.fail_queued(errc::spawn_failed, refused_degraded(nullptr, restart_.last_error()));
}

// --- the fork server ---------------------------------------------------------------------

void pool_core::on_server_spawned(int pid, time_point now) {
    server_.spawned(pid, now);
}

void pool_core::on_server_spawn_error(std::string why, time_point now) {
    server_gone(server_.describe_spawn_error(why), now);
}

void pool_core::on_server_hello(const wire::hello_msg& hello, time_point now) {
    if (auto problem = server_.hello(hello, now)) {
        on_server_protocol_error(std::move(*problem), now);
        return;
    }
    settle(now);  // the workers waiting for it may start
}

void pool_core::on_server_protocol_error(std::string what, time_point now) {
    server_.protocol_error(std::move(what), now);
}

void pool_core::on_server_log(std::string_view bytes) {
    server_.log(bytes);
}

void pool_core::on_server_exit(const exit_status& status, time_point now) {
    server_gone(server_.describe_end(status, now), now);
}

void pool_core::server_gone(std::string why, time_point now) {
    const auto end = server_.gone(why, phase_.stopping(), now);
    if (!end.for_good) {
        lifecycle_.requeue_fork_requests(now);
        if (end.was_failed_start) {
            server_.count_failed_start();
            start_failed(std::move(why), now);
        }
        server_.restart_at(lifecycle_.restart_time(server_.child().failures(), true, now), now);
    }
    ending_.finish_if_done(now);
}

// --- exits and stops ---------------------------------------------------------------------

void pool_core::on_exit(slot_id s, const exit_status& status, time_point now) {
    auto end = lifecycle_.exited(s, status, now);
    if (!end) {
        return;
    }
    carry_out(s, *end, now);
    lifecycle_.after_exit(s, now);
    report_.apply(facts::worker_exited{.slot = s,
                                       .pid = end->pid,
                                       .how = end->how,
                                       .was = end->was,
                                       .next = lifecycle_.next_start(s, now)});
    settle(now);
}

void pool_core::carry_out(slot_id s, worker_end& end, time_point now) {
    if (end.task) {
        flow_.failed_under(s, std::move(*end.task), now);
    }
    if (end.failed_start) {
        start_failed(std::move(*end.failed_start), now);
    }
}

void pool_core::shutdown(time_point now) {
    if (ending_.shutdown()) {
        settle(now);
    }
}

void pool_core::stop(time_point now) {
    ending_.stop(now);
}

}  // namespace torchpool::core
