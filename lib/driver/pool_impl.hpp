// The pool's driver: the thin loop between the sans-io core and the system. It feeds the
// core the events its I/O objects report (a process exited, a message or log output came,
// a timer fired) and carries out the actions the core decides (start or signal a process,
// send a message, complete a task). Everything here runs on the pool's executor; its
// fork-server side is in pool_impl_fork_server.cpp. The I/O objects it owns do the system
// calls:
//
//   process_io        one process's pidfd and output pipe (the one reaper)
//   worker_channel    a worker's channel: frames read and written without blocking
//   fork_server_link  the fork server's process and control socket
//   side_processes    the fork server's helpers and unwanted forks
//   completion        running on the pool's executor, completing handlers on theirs
//   event_stream      the bounded buffer of events behind async_next_event
#pragma once

#include "../core/log_lines.hpp"
#include "../core/pool_core.hpp"
#include "../posix/limits.hpp"
#include "../posix/process.hpp"
#include "../shm/arena.hpp"
#include "completion.hpp"
#include "event_stream.hpp"
#include "fork_server_link.hpp"
#include "health_board.hpp"
#include "intake.hpp"
#include "memory_limits.hpp"
#include "process_io.hpp"
#include "side_processes.hpp"
#include "worker_channel.hpp"
#include "worker_link.hpp"
#include "worker_outputs.hpp"
#include <torchpool/health.hpp>
#include <torchpool/pool_params.hpp>
#include <torchpool/stats.hpp>
#include <torchpool/task.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

namespace torchpool::detail {

using run_handler = boost::asio::any_completion_handler<void(boost::system::error_code)>;
using submit_handler =
    boost::asio::any_completion_handler<void(boost::system::error_code, response)>;
using allocate_handler =
    boost::asio::any_completion_handler<void(boost::system::error_code, tensor)>;

class pool_impl final : public std::enable_shared_from_this<pool_impl>,
                        private worker_link::events {
public:
    pool_impl(boost::asio::any_io_executor ex, const pool_params& params);
    ~pool_impl();

    // The public operations; callable from any thread.
    void run(run_handler handler);
    void submit(submit_handler&& handler, request&& req);
    // A tensor in the pool's input memory (thread-safe); see pool::allocate.
    tensor allocate(dtype type, std::vector<std::int64_t> shape, boost::system::error_code& ec);
    // The same, waiting for room; see pool::async_allocate.
    void allocate(allocate_handler&& handler, dtype type, std::vector<std::int64_t> shape);
    void shutdown(run_handler handler);
    void cancel();
    void resize(std::size_t workers);
    void next_event(event_handler&& handler);
    pool_health health() const;
    pool_stats stats() const;

private:
    // An async_allocate waiting for room in input memory.
    struct waiting_allocation {
        std::uint64_t id;
        allocate_handler handler;
        dtype type;
        std::vector<std::int64_t> shape;
    };
    void do_allocate(waiting_allocation&& wait);
    // The bytes of a tensor of `type` and `shape`, if input memory can ever hold it.
    std::optional<std::uint64_t> fits(dtype type, const std::vector<std::int64_t>& shape) const;
    // Gives room to waiting allocations, in order, while there is room.
    void serve_waiting_allocations();
    void end_waiting_allocations(boost::system::error_code ec);

    struct pending_task {
        submit_handler handler;
        shared_frame request_frame;
        fault inject;
        std::vector<shared_bytes> placed;  // the tensors the frame places in input memory
    };
    // A request as submit took it in on the caller's thread: ready, or why it is invalid.
    using taken = std::variant<taken_request, std::string>;

    void do_run(run_handler handler);
    void do_shutdown(run_handler handler);
    void do_submit(core::task_id id, submit_handler&& handler, taken&& in, std::string&& method,
                   fault inject);

    // Carries out every action the core has decided, then re-arms the timer.
    void drive();
    void execute(core::spawn_action& a);
    void execute(core::fork_action& a);
    void execute(core::start_server_action& a);
    void execute(core::stop_server_action& a);
    void execute(core::send_request_action& a);
    void execute(core::send_shutdown_action& a);
    void execute(core::send_cancel_action& a);
    void execute(core::send_heartbeat_action& a);
    void execute(core::signal_action& a);
    void execute(core::complete_action& a);
    void execute(core::run_finished_action& a);
    void execute(core::notify_action& a);
    void arm_timer();

    // Workers: what their links read goes to the core (worker_link::events).
    void adopt(core::slot_id slot, posix::spawned_process& p);
    void output(core::slot_id slot, std::string_view bytes, bool at_exit) override;
    bool frames(core::slot_id slot, wire::frame_reader& reader) override;
    void protocol_error(core::slot_id slot, std::string what) override;
    void channel_closed(core::slot_id slot, std::string how) override;
    void exited(core::slot_id slot, core::exit_status status) override;
    void settle() override { drive(); }
    // A worker's hello with its output memory; false (and a protocol error) if it is unusable.
    bool adopt_outputs(core::slot_id slot, const wire::hello_msg& hello);
    // Tells the worker in `slot` which blocks of `outputs` callers let go, if it is still its.
    void send_releases(core::slot_id slot, const std::shared_ptr<worker_outputs>& outputs);
    void forget_outputs(core::slot_id slot);

    // The fork server.
    void read_server_control();
    void on_server_packet(server_packet& packet);
    void on_worker_handed_over(wire::worker_handed_over& made, core::time_point now);
    void on_helper_end(int pid, const core::exit_status& status);
    void finish_server_exit_when_read();

    // pool_params::on_log_line: what a worker (slot, pid) or the fork server wrote.
    void log_output(core::line_splitter& lines, std::string_view bytes, std::size_t slot, int pid,
                    bool fork_server, bool at_exit);

    // Descriptors reserved under the open-file limit while the pool exists; first, so that a
    // pool that cannot fit fails before anything else is made.
    posix::fd_reservation fds_;
    memory_limits memory_;
    // The pool's input memory (null when pool_params::shared_memory.input_bytes is 0); before
    // the launcher, which passes it to every child.
    std::shared_ptr<shm::arena> inputs_;
    health_board health_;  // read off the executor too
    completion_context completion_;
    pool_params params_;
    core::pool_core core_;
    posix::launcher launcher_;
    fork_server_link server_;
    side_processes side_;
    event_stream events_;
    core::line_splitter server_lines_;
    boost::asio::steady_timer timer_;
    core::time_point armed_for_ = core::time_point::max();
    std::vector<std::unique_ptr<worker_link>> workers_;
    std::vector<core::line_splitter> worker_lines_;         // for pool_params::on_log_line
    std::vector<std::shared_ptr<worker_outputs>> outputs_;  // each slot's process's, if any
    std::unordered_map<core::task_id, pending_task> pending_;
    std::deque<waiting_allocation> allocations_;
    // The members used off the executor.
    std::atomic<core::task_id> next_task_id_{1};
    held_counter outputs_held_ = std::make_shared<std::atomic<std::uint64_t>>(0);
    std::atomic<std::uint64_t> tensors_inline_{0};
    std::atomic<std::uint64_t> tensors_shared_{0};
    std::atomic<std::uint64_t> input_memory_full_{0};
    std::atomic<bool> quarantining_{false};          // mirrors the core's quarantine, for intake
    std::atomic<std::uint64_t> next_allocation_{1};  // numbers async_allocate calls
    bool allocations_wait_ = false;                  // on the pool executor: the free hook is set
    std::atomic<std::uint64_t> next_event_wait_{1};  // numbers async_next_event calls
    bool run_called_ = false;
    // Optional rather than empty: Boost 1.81's any_completion_handler move assignment
    // recurses forever (it copies from an lvalue), so handlers are only move-constructed.
    std::optional<run_handler> run_handler_;
    std::vector<run_handler> shutdown_handlers_;
};

}  // namespace torchpool::detail
