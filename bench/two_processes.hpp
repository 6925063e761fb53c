// The baselines' second process: a child on one end of a socketpair, and whole reads and
// writes with blocking I/O, shared by the benchmarks that measure the pool beside what two
// plain processes do on the same machine (roundtrip, tensor_transfer).
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace torchpool::bench {

inline bool write_all(int fd, const char* data, std::size_t size) {
    while (size > 0) {
        const ssize_t n = ::write(fd, data, size);
        if (n <= 0) {
            return false;
        }
        data += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

inline bool read_all(int fd, char* data, std::size_t size) {
    while (size > 0) {
        const ssize_t n = ::read(fd, data, size);
        if (n <= 0) {
            return false;
        }
        data += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

/// A child process on a socketpair, running `serve(fd)` on its end until it returns; it dies
/// with this process. The destructor closes this end and waits for the child.
class peer {
public:
    explicit peer(const std::function<void(int)>& serve) {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
            std::perror("socketpair");
            std::exit(1);
        }
        pid_ = ::fork();
        if (pid_ == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            // Keep only our end: other pairs' parent ends, inherited from other threads,
            // would otherwise keep their children from seeing end of stream.
            ::dup2(sv[1], 3);
            ::syscall(SYS_close_range, 4, ~0U, 0);
            serve(3);
            ::_exit(0);
        }
        ::close(sv[1]);
        fd_ = sv[0];
    }
    peer(const peer&) = delete;
    peer& operator=(const peer&) = delete;
    ~peer() {
        ::close(fd_);
        ::waitpid(pid_, nullptr, 0);
    }

    int fd() const noexcept { return fd_; }

private:
    int fd_ = -1;
    pid_t pid_ = -1;
};

}  // namespace torchpool::bench
