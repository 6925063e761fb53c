// Starting worker processes and collecting their exit status, through pidfds only.
#pragma once

#include "clone.hpp"
#include "exit_status.hpp"
#include <torchpool/pool_params.hpp>
#include <torchpool/task.hpp>

#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace torchpool::posix {

struct child_setup;  // what a new worker process reads until its exec (process.cpp)

/// A started worker: its pid (for messages only; never used to signal or wait), a pidfd,
/// the host's end of its channel, and the read end of its stdout+stderr pipe. All three
/// descriptors are non-blocking and close-on-exec.
struct spawned_process {
    int pid = 0;
    unique_fd pidfd;
    unique_fd channel;
    unique_fd log;
};

/// Starts worker processes from `worker_params`. The argument and environment arrays are
/// built once, so a start does no allocation in the child.
class launcher {
public:
    /// `extra_env` ("NAME=value") comes before `params.env`, which wins on a clash.
    /// `channel_type` is SOCK_STREAM for workers, SOCK_SEQPACKET for a fork server. `inputs`,
    /// unless -1, is the pool's input memory, which each child finds on fd 4
    /// (TORCHPOOL_INPUTS_FD); the caller keeps it open.
    explicit launcher(const worker_params& params, const std::vector<std::string>& extra_env = {},
                      int channel_type = 1 /* SOCK_STREAM */, int inputs = -1);

    /// Starts one worker with spawn_shared (CLONE_VM | CLONE_PIDFD: nothing of the host's
    /// memory is copied, the caller does not wait for the exec, no pid-reuse race, no
    /// SIGCHLD handler needed). In the
    /// child: signal handlers reset, PR_SET_PDEATHSIG(parent_death_signal), the channel on
    /// fd 3, stdout and stderr into the log pipe, stdin from /dev/null, every other fd
    /// closed, then exec. If exec fails, the child writes why to its log and exits with 127.
    /// Returns the reason in words if the process could not be created.
    /// The child finds `slot` in TORCHPOOL_WORKER_SLOT.
    std::variant<spawned_process, std::string> spawn(std::size_t slot = 0);

private:
    // A copy of `setup` and of everything it points to, in memory of the child's own.
    std::pair<child_memory*, child_setup*> child_copy(const child_setup& setup) const;

    std::string executable_;
    std::vector<std::string> strings_;  // storage for argv_ and envp_
    std::vector<char*> argv_;
    std::vector<char*> envp_;
    std::string exec_failure_prefix_;
    std::size_t slot_entry_ = 0;  // index in strings_ of TORCHPOOL_WORKER_SLOT=..., rewritten
    int channel_type_;
    int inputs_;
};

/// Collects the exit status of the process behind `pidfd` if it has exited
/// (waitid(P_PIDFD, WEXITED | WNOHANG)); nullopt while it is still running.
std::optional<exit_status> try_reap(int pidfd);

/// True if the process behind `pidfd` has exited, without collecting its status
/// (waitid with WNOWAIT: the one reaper still gets it).
bool has_exited(int pidfd);

/// Sends SIGKILL to every process of `pidfds`, then reaps them, waiting at most `limit` in
/// all (a process in uninterruptible sleep, or dumping core, may take longer to go; it is
/// left to exit on its own, as a zombie). Only for teardown, where no event loop is left.
/// Returns how many were not reaped in time.
std::size_t kill_and_reap(std::span<const int> pidfds, std::chrono::milliseconds limit);

/// The time `kill_and_reap` waits in destructors.
inline constexpr std::chrono::milliseconds teardown_limit{2'000};

/// Sends `signo` through the pidfd (never by pid). False if the process is already gone.
bool send_signal(int pidfd, int signo) noexcept;

}  // namespace torchpool::posix
