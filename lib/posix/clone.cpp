#include "clone.hpp"

#include <cerrno>
#include <cstdint>

#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace torchpool::posix {

void unique_fd::reset(int fd) noexcept {
    if (fd_ >= 0) {
        ::close(fd_);
    }
    fd_ = fd;
}

void settle_child(int parent, int channel, int log, int stdin_fd) noexcept {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) {
        ::_exit(126);  // the parent died before we could ask to die with it
    }
    // Move our ends above the target numbers first, in case they are 0..3 themselves.
    const int moved_channel = ::fcntl(channel, F_DUPFD, 10);
    const int moved_log = ::fcntl(log, F_DUPFD, 10);
    const int moved_stdin = stdin_fd >= 0 ? ::fcntl(stdin_fd, F_DUPFD, 10) : -1;
    if (moved_channel < 0 || moved_log < 0 || (stdin_fd >= 0 && moved_stdin < 0) ||
        (moved_stdin >= 0 && ::dup2(moved_stdin, 0) < 0) || ::dup2(moved_log, 1) < 0 ||
        ::dup2(moved_log, 2) < 0 || ::dup2(moved_channel, channel_fd) < 0) {
        ::_exit(126);
    }
    ::syscall(SYS_close_range, channel_fd + 1, ~0U, 0);
}

bool write_all(int fd, const char* text, std::size_t size) noexcept {
    while (size > 0) {
        const ssize_t n = ::write(fd, text, size);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        text += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

bool set_nonblocking(int fd) noexcept {
    const int flags = ::fcntl(fd, F_GETFL);
    return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

long create_child(spawn_method method, int* pidfd) noexcept {
    *pidfd = -1;
    switch (method) {
        case spawn_method::clone3: {
            clone_args args{};
            args.flags = CLONE_PIDFD;
            args.pidfd = reinterpret_cast<std::uint64_t>(pidfd);
            args.exit_signal = SIGCHLD;
            return ::syscall(SYS_clone3, &args, sizeof args);
        }
        case spawn_method::clone:
#if defined(__x86_64__)
            // x86-64 order: flags, stack, parent_tid (receives the pidfd), child_tid, tls.
            return ::syscall(SYS_clone, CLONE_PIDFD | SIGCHLD, nullptr, pidfd, nullptr, 0);
#else
            errno = ENOSYS;
            return -1;
#endif
        case spawn_method::fork:
            return ::fork();
    }
    errno = EINVAL;
    return -1;
}

long create_sibling(int* pidfd) noexcept {
    *pidfd = -1;
    clone_args args{};
    args.flags = CLONE_PARENT | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<std::uint64_t>(pidfd);
    args.exit_signal = 0;  // must be 0 with CLONE_PARENT; the child gets our SIGCHLD
    return ::syscall(SYS_clone3, &args, sizeof args);
}

}  // namespace torchpool::posix
