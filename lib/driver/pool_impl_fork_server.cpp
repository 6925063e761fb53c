// The pool's driver, its fork-server side (start_mode::fork_server): starting and stopping the
// fork server, asking it for workers, adopting the workers and helpers it hands over, and its
// exit (see pool_impl.hpp).
#include "pool_impl.hpp"
#include <torchpool/error.hpp>

namespace torchpool::detail {

void pool_impl::execute(core::start_server_action&) {
    auto started = launcher_.spawn(0);
    if (auto* why = std::get_if<std::string>(&started)) {
        core_.on_server_spawn_error(std::move(*why), core::clock::now());
        return;
    }
    auto& p = std::get<posix::spawned_process>(started);
    server_.open(p);
    core_.on_server_spawned(p.pid, core::clock::now());
    const auto keep = shared_from_this();
    server_.process().watch_exit(keep, [this] {
        finish_server_exit_when_read();
        drive();
    });
    read_server_control();
    server_.process().read_output(
        keep,
        [this](std::string_view bytes) {
            core_.on_server_log(bytes);
            log_output(server_lines_, bytes, 0, core_.fork_server_pid(), true, false);
        },
        [this] {
            finish_server_exit_when_read();
            drive();
        });
}

void pool_impl::execute(core::stop_server_action& a) {
    if (a.kill) {
        server_.kill();
    } else {
        server_.ask_to_exit();
    }
}

void pool_impl::execute(core::fork_action& a) {
    if (auto problem = server_.request_worker(a.slot)) {
        // The slot retries after its backoff.
        core_.on_spawn_error(a.slot, std::move(*problem), core::clock::now());
    }
}

void pool_impl::read_server_control() {
    server_.read(shared_from_this(), [this](std::vector<server_packet> packets, bool more) {
        for (auto& packet : packets) {
            on_server_packet(packet);
        }
        if (more) {
            read_server_control();  // on to the end, even after the exit
        }
        finish_server_exit_when_read();
        drive();
    });
}

void pool_impl::on_server_packet(server_packet& packet) {
    const auto now = core::clock::now();
    // The process behind a pidfd that does not become a worker is reaped here, whatever the
    // reason: its slot stopped meanwhile, it died before it could hand itself over (the server
    // then sends its pidfd with an error), or the hand-over is broken.
    const auto reap = [this](posix::unique_fd& pidfd) {
        if (pidfd) {
            side_.adopt_unwanted(std::move(pidfd), shared_from_this());
        }
    };
    if (auto* broken = std::get_if<wire::fork_server_violation>(&packet)) {
        reap(broken->process);
        core_.on_server_protocol_error(std::move(broken->what), now);
    } else if (auto* hello = std::get_if<wire::hello_msg>(&packet)) {
        core_.on_server_hello(*hello, now);
    } else if (auto* helper = std::get_if<wire::helper_handed_over>(&packet)) {
        side_.adopt_helper(helper->pid, std::move(helper->pidfd), shared_from_this());
    } else if (auto* refused = std::get_if<wire::fork_refused>(&packet)) {
        reap(refused->process);
        const auto slot = server_.answered(refused->sequence);
        if (slot && core_.awaiting_fork(*slot)) {
            core_.on_spawn_error(*slot,
                                 "the fork server could not make a worker: " + refused->error, now);
        }
    } else {
        on_worker_handed_over(std::get<wire::worker_handed_over>(packet), now);
    }
}

void pool_impl::on_worker_handed_over(wire::worker_handed_over& made, core::time_point now) {
    const auto slot = server_.answered(made.sequence);
    if (!slot || !core_.awaiting_fork(*slot)) {
        side_.adopt_unwanted(std::move(made.pidfd), shared_from_this());  // its slot moved on
        return;
    }
    if (!posix::set_nonblocking(made.channel.get()) || !posix::set_nonblocking(made.output.get())) {
        side_.adopt_unwanted(std::move(made.pidfd), shared_from_this());
        core_.on_spawn_error(*slot, "cannot make a forked worker's descriptors non-blocking", now);
        return;
    }
    posix::spawned_process p{made.pid, std::move(made.pidfd), std::move(made.channel),
                             std::move(made.output)};
    adopt(*slot, p);
}

void pool_impl::on_helper_end(int pid, const core::exit_status& status) {
    // A helper that ends alone took the requests it was working on with it: the server is
    // replaced, which asks for those workers again.
    auto& io = server_.process();
    if (io.alive() && !io.exit() && server_.control_open() && !io.has_exited()) {
        core_.on_server_protocol_error("lost its helper process " + std::to_string(pid) +
                                           ", which " + core::describe_exit(status),
                                       core::clock::now());
    }
    finish_server_exit_when_read();
    drive();
}

// As for workers: the exit is told only when no read is in flight, after what the pipes
// still hold, and once the control socket has ended, so that every worker the server made
// has handed itself over.
void pool_impl::finish_server_exit_when_read() {
    auto& io = server_.process();
    if (!io.exit() || server_.control_open() || server_.control_reading() || io.reading_output() ||
        side_.helpers_running()) {
        return;
    }
    io.drain_output([this](std::string_view bytes) {
        core_.on_server_log(bytes);
        log_output(server_lines_, bytes, 0, core_.fork_server_pid(), true, false);
    });
    log_output(server_lines_, {}, 0, core_.fork_server_pid(), true, true);
    const auto status = *io.exit();
    server_.close();
    core_.on_server_exit(status, core::clock::now());
}

}  // namespace torchpool::detail
