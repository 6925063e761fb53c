// The three ways a child can be created, each reaped through its pidfd.
#include "posix/process.hpp"

#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

using namespace torchpool;

TEST_CASE("clone3, clone and fork each give a pidfd that reaps the exact exit status",
          "[process][spawn]") {
    for (auto method :
         {posix::spawn_method::clone3, posix::spawn_method::clone, posix::spawn_method::fork}) {
        CAPTURE(static_cast<int>(method));
        int pidfd = -1;
        const long pid = posix::create_child(method, &pidfd);
        REQUIRE(pid >= 0);
        if (pid == 0) {
            ::_exit(7);
        }
        if (method == posix::spawn_method::fork) {
            CHECK(pidfd == -1);
            pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
        }
        REQUIRE(pidfd >= 0);
        pollfd exited{pidfd, POLLIN, 0};
        REQUIRE(::poll(&exited, 1, 10'000) == 1);
        auto status = posix::try_reap(pidfd);
        REQUIRE(status);
        CHECK(status->exit_code == 7);
        CHECK(!status->signal);
        ::close(pidfd);
    }
}
