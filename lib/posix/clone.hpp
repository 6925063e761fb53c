// Creating processes and owning descriptors: the pieces that the pool (host) and the fork
// server (worker SDK) share.
#pragma once

#include <cstddef>
#include <utility>

/// Code that runs in a child sharing the host's memory is not instrumented by the
/// sanitizers: their bookkeeping (ThreadSanitizer's shadow stack of the calling thread) is
/// the host thread's, which the child must not change.
#define TORCHPOOL_SHARED_CHILD __attribute__((no_sanitize("address", "thread", "undefined")))

namespace torchpool::posix {

/// The fd number on which every worker finds its channel to the pool.
inline constexpr int channel_fd = 3;

/// Owns one file descriptor.
class unique_fd {
public:
    unique_fd() noexcept = default;
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    unique_fd& operator=(unique_fd&& other) noexcept {
        if (this != &other) {
            reset(std::exchange(other.fd_, -1));
        }
        return *this;
    }
    ~unique_fd() { reset(); }

    int get() const noexcept { return fd_; }
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset(int fd = -1) noexcept;
    explicit operator bool() const noexcept { return fd_ >= 0; }

private:
    int fd_ = -1;
};

/// How a process that will exec is created. Both share the caller's memory until the child
/// calls execve or _exit (CLONE_VM | CLONE_VFORK, as posix_spawn does), so nothing of the
/// caller's address space is copied, however large it is: the calling thread waits only
/// until the child has exec'd. `pidfd`: the kernel makes the pidfd with the child
/// (CLONE_PIDFD), so no pid is ever trusted; `pidfd_open`: where CLONE_PIDFD is refused, it
/// is opened right after (the child is ours and not yet reaped, so the pid is still its).
enum class spawn_method { pidfd, pidfd_open };

/// Runs `child(arg)` in a new process made with `method` (see spawn_method), on a stack of
/// its own, with every signal blocked (so that no handler of the caller runs in memory the
/// caller shares). `child` may only make async-signal-safe calls, must not allocate, and
/// should end with execve or _exit (if it returns, the child exits with its result).
/// Returns the pid and sets `*pidfd`, or returns -1 with errno.
long spawn_shared(spawn_method method, int (*child)(void*), void* arg, int* pidfd) noexcept;

/// Creates a child of our own parent (clone3 with CLONE_PARENT | CLONE_PIDFD): the fork
/// server's way to make workers that the pool, not the server, reaps. The child inherits
/// our exit signal (SIGCHLD), as the kernel wants with CLONE_PARENT. Like fork(): the pid
/// in the parent, 0 in the child, -1 with errno (ENOSYS where clone3 is refused). The
/// child's own thread id is where glibc looks for it and its robust-futex list is
/// registered, as after fork(); atfork handlers are the caller's business (worker/atfork).
long create_sibling(int* pidfd) noexcept;

/// The signal a worker gets when the host thread that created it ends (PR_SET_PDEATHSIG).
///
/// The kernel sends it when the creating *thread* exits, not only when the host process
/// does; so it is not SIGKILL (a host whose io threads come and go would lose workers), but
/// a signal whose default action is to ignore it. The worker SDK catches it and dies only
/// if its parent is no longer the host process (`getppid()` is then a reaper), which covers
/// a host that is SIGKILLed; until the SDK is set up, the signal is ignored and the SDK
/// checks the parent once itself (see worker/host_watch).
inline constexpr int parent_death_signal = 23;  // SIGURG

/// The environment variable in which a worker finds the host's process id.
inline constexpr const char* host_pid_variable = "TORCHPOOL_HOST_PID";

/// In a new worker process, between its creation and its work; async-signal-safe. Asks for
/// `parent_death_signal` when its parent goes (exits with 126 if `parent` is already gone), puts
/// `log` on fds 1 and 2, `channel` on fd 3 and, unless -1, `stdin_fd` on fd 0, and closes
/// every other descriptor above 3. Exits with 126 if it cannot.
TORCHPOOL_SHARED_CHILD void settle_child(int parent, int channel, int log, int stdin_fd) noexcept;

/// Ends the process at once (exit_group), running nothing; for a child before its exec.
[[noreturn]] TORCHPOOL_SHARED_CHILD void exit_now(int code) noexcept;

/// Writes all of `size` bytes, retrying on EINTR; async-signal-safe. False on failure.
TORCHPOOL_SHARED_CHILD bool write_all(int fd, const char* text, std::size_t size) noexcept;

/// Sets O_NONBLOCK. False with errno on failure.
bool set_nonblocking(int fd) noexcept;

}  // namespace torchpool::posix
