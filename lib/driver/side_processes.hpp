// Processes of the pool's own that are neither workers nor the fork server: the fork
// server's helpers (they end with the server or its control socket) and forks nobody wants
// any more (killed at once). Each is reaped here, through its pidfd, when it exits.
#pragma once

#include "../core/types.hpp"
#include "../posix/clone.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <functional>
#include <memory>
#include <vector>

namespace torchpool::detail {

class side_processes {
public:
    // Told when a helper ended, with its pid and how; not for unwanted forks.
    using helper_ended = std::function<void(int pid, const core::exit_status& status)>;

    side_processes(const boost::asio::any_io_executor& ex, helper_ended on_helper_end)
        : executor_(ex), on_helper_end_(std::move(on_helper_end)) {}
    ~side_processes();

    // A helper of the fork server, reaped when it exits.
    void adopt_helper(int pid, posix::unique_fd pidfd, const std::shared_ptr<void>& keep);
    // A fork nobody wants (its slot stopped meanwhile): killed now, reaped when gone.
    void adopt_unwanted(posix::unique_fd pidfd, const std::shared_ptr<void>& keep);
    bool helpers_running() const;
    /// The pidfds of every process not reaped yet, for a teardown that kills them all at
    /// once (posix::kill_and_reap).
    void append_pidfds(std::vector<int>& out);

private:
    struct process {
        process(const boost::asio::any_io_executor& ex, int pid_, int fd, bool helper_)
            : pid(pid_), helper(helper_), pidfd(ex, fd) {}
        int pid;
        bool helper;
        boost::asio::posix::stream_descriptor pidfd;
    };

    void adopt(int pid, posix::unique_fd pidfd, bool helper, const std::shared_ptr<void>& keep);
    void reap_when_exited(process* p, std::shared_ptr<void> keep);

    boost::asio::any_io_executor executor_;
    helper_ended on_helper_end_;
    std::vector<std::unique_ptr<process>> processes_;
};

}  // namespace torchpool::detail
