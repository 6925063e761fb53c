#include "fork_server.hpp"

#include "../posix/clone.hpp"
#include "../wire/codec.hpp"

#include <capnp/common.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace torchpool::worker::detail {

namespace {

bool send_packet(int fd, const wire::frame& frame, std::span<const int> fds) {
    auto bytes = frame.asBytes();
    iovec iov{const_cast<kj::byte*>(bytes.begin()), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * 3)> control{};
    if (!fds.empty()) {
        msg.msg_control = control.data();
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    for (;;) {
        const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n >= 0) {
            return static_cast<std::size_t>(n) == bytes.size();
        }
        if (errno != EINTR) {
            return false;
        }
    }
}

std::size_t thread_count() {
    std::error_code ec;
    std::size_t n = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/self/task", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        ++n;
    }
    return n;
}

// In the new worker, between clone3 and returning to the SDK: descriptors in place, and
// death with the pool. Only async-signal-safe calls: another thread of a library may have
// held a lock when we were cloned (though a fork server should have no other thread).
void become_worker(pid_t pool, int channel, int log) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != pool) {
        ::_exit(126);  // the pool died before we could ask to die with it
    }
    const int moved_channel = ::fcntl(channel, F_DUPFD_CLOEXEC, 10);
    const int moved_log = ::fcntl(log, F_DUPFD_CLOEXEC, 10);
    if (moved_channel < 0 || moved_log < 0 || ::dup2(moved_log, 1) < 0 ||
        ::dup2(moved_log, 2) < 0 || ::dup2(moved_channel, posix::channel_fd) < 0) {
        ::_exit(126);
    }
    // Everything else goes: the server's control socket was fd 3 and is replaced; other
    // workers' descriptors are never held here (the server closes them after each fork).
    ::syscall(SYS_close_range, posix::channel_fd + 1, ~0U, 0);
}

}  // namespace

std::variant<int, forked_worker> run_fork_server(int control_fd, const wire::hello_msg& hello) {
    if (const std::size_t threads = thread_count(); threads > 1) {
        std::fprintf(stderr,
                     "torchpool fork server: warning: %zu threads are running before the first "
                     "fork; a worker gets only the forking thread, and a lock another thread "
                     "held stays locked in it. Start no thread pool (LibTorch, OpenMP, CUDA) "
                     "before server::serve().\n",
                     threads);
    }
    if (!send_packet(control_fd, wire::encode(hello), {})) {
        std::fprintf(stderr, "torchpool fork server: cannot write to the pool: %s\n",
                     std::strerror(errno));
        return 2;
    }
    const pid_t pool = ::getppid();
    std::array<capnp::word, 512> buffer;
    for (;;) {
        const ssize_t n = ::recv(control_fd, buffer.data(), sizeof buffer, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n == 0) {
            return 0;  // the pool is done with us
        }
        if (n < 0) {
            std::fprintf(stderr, "torchpool fork server: cannot read from the pool: %s\n",
                         std::strerror(errno));
            return 2;
        }
        auto decoded = wire::decode(
            std::span<const capnp::word>(buffer.data(), static_cast<std::size_t>(n) / 8));
        auto* msg = std::get_if<wire::message>(&decoded);
        auto* request = msg ? std::get_if<wire::fork_request_msg>(msg) : nullptr;
        if (msg && std::holds_alternative<wire::shutdown_msg>(*msg)) {
            return 0;
        }
        if (!request) {
            std::fprintf(stderr, "torchpool fork server: the pool sent %s, not a fork request\n",
                         msg ? wire::message_name(*msg)
                             : std::get<wire::decode_error>(decoded).what.c_str());
            return 2;
        }

        wire::fork_reply_msg reply{.sequence = request->sequence};
        int channel[2] = {-1, -1};
        int log[2] = {-1, -1};
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel) != 0 ||
            ::pipe2(log, O_CLOEXEC) != 0) {
            reply.error = std::string("cannot create the worker's channel or log pipe: ") +
                          std::strerror(errno);
        }
        posix::unique_fd pool_channel(channel[0]), worker_channel(channel[1]);
        posix::unique_fd log_read(log[0]), log_write(log[1]);
        if (reply.error.empty()) {
            std::fflush(nullptr);  // or the worker would write our buffered output again
            int pidfd = -1;
            const long pid = posix::create_sibling(&pidfd);
            if (pid == 0) {
                // The new worker hands itself over, with a pidfd of its own: so even if the
                // server dies right after the clone, the pool learns of it (the pool treats
                // the server as gone only once every holder of this socket has closed it).
                reply.pid = static_cast<int>(::getpid());
                posix::unique_fd self(static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0)));
                const std::array<int, 3> fds = {self.get(), pool_channel.get(), log_read.get()};
                if (!self || !send_packet(control_fd, wire::encode(reply), fds)) {
                    ::_exit(126);  // the pool is gone: nobody to work for
                }
                become_worker(pool, worker_channel.get(), log_write.get());
                self.release();  // closed by close_range; do not close numbers reused since
                pool_channel.release();
                worker_channel.release();
                log_read.release();
                log_write.release();
                return forked_worker{request->slot};
            }
            if (pid < 0) {
                reply.error = std::string("clone3(CLONE_PARENT | CLONE_PIDFD) failed: ") +
                              std::strerror(errno);
            } else {
                ::close(pidfd);  // the worker sends its own
                continue;
            }
        }
        if (!send_packet(control_fd, wire::encode(reply), {})) {
            std::fprintf(stderr, "torchpool fork server: cannot answer the pool: %s\n",
                         std::strerror(errno));
            return 2;
        }
    }
}

}  // namespace torchpool::worker::detail
