// Sends one packet on a Unix socket with descriptors attached (SCM_RIGHTS), as the fork server
// hands workers over: for the tests and the fuzz target of the pool's packet reader.
#pragma once

#include <array>
#include <cstddef>
#include <cstring>
#include <string>

#include <sys/socket.h>

namespace torchpool::test {

/// Sends `bytes` as one packet with `count` (at most 16) copies of descriptor `fd`; false if
/// sendmsg failed.
inline bool send_with_descriptors(int socket, const std::string& bytes, std::size_t count, int fd) {
    iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * 128)> control{};
    if (count > 128) {
        return false;
    }
    if (count > 0) {
        msg.msg_control = control.data();
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * count);
        for (std::size_t i = 0; i < count; ++i) {
            std::memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof fd);
        }
    }
    return ::sendmsg(socket, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0;
}

}  // namespace torchpool::test
