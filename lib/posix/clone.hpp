// Creating processes and owning descriptors: the pieces that the pool (host) and the fork
// server (worker SDK) share.
#pragma once

#include <cstddef>
#include <utility>

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

/// How a child is created: clone3 or clone with CLONE_PIDFD (the pidfd comes with the
/// child, so no pid is ever trusted), or fork() followed by pidfd_open as a last resort.
enum class spawn_method { clone3, clone, fork };

/// Creates a child process with `method`, like fork(): returns the pid in the parent, 0 in
/// the child, -1 with errno on failure. `*pidfd` receives the pidfd, or -1 after fork().
long create_child(spawn_method method, int* pidfd) noexcept;

/// Creates a child of our own parent (clone3 with CLONE_PARENT | CLONE_PIDFD): the fork
/// server's way to make workers that the pool, not the server, reaps. The child inherits
/// our exit signal (SIGCHLD), as the kernel wants with CLONE_PARENT. Like fork(): the pid
/// in the parent, 0 in the child, -1 with errno (ENOSYS where clone3 is refused).
long create_sibling(int* pidfd) noexcept;

/// In a new worker process, between its creation and its work; async-signal-safe. Dies
/// with `parent` (PR_SET_PDEATHSIG, SIGKILL; exits with 126 if it is already gone), puts
/// `log` on fds 1 and 2, `channel` on fd 3 and, unless -1, `stdin_fd` on fd 0, and closes
/// every other descriptor above 3. Exits with 126 if it cannot.
void settle_child(int parent, int channel, int log, int stdin_fd) noexcept;

/// Writes all of `size` bytes, retrying on EINTR; async-signal-safe. False on failure.
bool write_all(int fd, const char* text, std::size_t size) noexcept;

/// Sets O_NONBLOCK. False with errno on failure.
bool set_nonblocking(int fd) noexcept;

}  // namespace torchpool::posix
