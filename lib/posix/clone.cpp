#include "clone.hpp"

#include <cerrno>
#include <cstdint>

#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace torchpool::posix {

void unique_fd::reset(int fd) noexcept {
    if (fd_ >= 0) {
        ::close(fd_);
    }
    fd_ = fd;
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
