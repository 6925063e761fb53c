#include "fd_passing.hpp"

#include <cerrno>
#include <cstring>

#include <sys/socket.h>

namespace torchpool::posix {

namespace {
// Room for max_passed_fds descriptors, aligned as cmsghdr requires.
union control_buffer {
    char bytes[CMSG_SPACE(sizeof(int) * max_passed_fds)];
    cmsghdr align;
};
}  // namespace

ssize_t send_with_fds(int socket, const iovec* iov, std::size_t count, std::span<const int> fds,
                      send_mode mode) noexcept {
    msghdr msg{};
    msg.msg_iov = const_cast<iovec*>(iov);
    msg.msg_iovlen = count;
    control_buffer control;
    if (!fds.empty()) {
        if (fds.size() > max_passed_fds) {
            errno = EINVAL;
            return -1;
        }
        std::memset(&control, 0, sizeof control);
        msg.msg_control = control.bytes;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* header = CMSG_FIRSTHDR(&msg);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t sent;
    do {
        sent = ::sendmsg(socket, &msg,
                         MSG_NOSIGNAL | (mode == send_mode::dont_wait ? MSG_DONTWAIT : 0));
    } while (sent < 0 && errno == EINTR);
    return sent;
}

ssize_t receive_with_fds(int socket, void* data, std::size_t size, std::vector<unique_fd>& fds,
                         receive_cuts& cuts) noexcept {
    iovec iov{data, size};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    control_buffer control;
    msg.msg_control = control.bytes;
    msg.msg_controllen = sizeof control.bytes;
    ssize_t n;
    do {
        n = ::recvmsg(socket, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return n;
    }
    for (cmsghdr* header = CMSG_FIRSTHDR(&msg); header; header = CMSG_NXTHDR(&msg, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        const std::size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof fd);
            fds.emplace_back(fd);
        }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
        cuts.descriptors = true;
    }
    if (msg.msg_flags & MSG_TRUNC) {
        cuts.bytes = true;
    }
    return n;
}

}  // namespace torchpool::posix
