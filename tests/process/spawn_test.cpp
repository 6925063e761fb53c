// Creating a child that shares our memory until exec (CLONE_VM | CLONE_VFORK), both ways,
// each reaped through its pidfd.
#include "posix/process.hpp"

#include <catch2/catch.hpp>

#include <cerrno>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace torchpool;

namespace {

struct shared_note {
    pid_t seen_by_child = 0;
};

int write_then_exit(void* arg) {
    static_cast<shared_note*>(arg)->seen_by_child = ::getpid();
    ::_exit(7);
}

}  // namespace

TEST_CASE("spawn_shared shares our memory (nothing is copied), waits for the child's exec or "
          "exit, and gives a pidfd that reaps the exact exit status",
          "[process][spawn]") {
    for (auto method : {posix::spawn_method::pidfd, posix::spawn_method::pidfd_open}) {
        CAPTURE(static_cast<int>(method));
        shared_note note;
        int pidfd = -1;
        const long pid = posix::spawn_shared(method, write_then_exit, &note, &pidfd);
        REQUIRE(pid > 0);
        REQUIRE(pidfd >= 0);
        // The child wrote into our memory (CLONE_VM: not a copy), and spawn_shared returned
        // only after it had exited (CLONE_VFORK), so the write is already visible.
        CHECK(note.seen_by_child == pid);
        pollfd exited{pidfd, POLLIN, 0};
        REQUIRE(::poll(&exited, 1, 10'000) == 1);
        auto status = posix::try_reap(pidfd);
        REQUIRE(status);
        CHECK(status->exit_code == 7);
        CHECK(!status->signal);
        ::close(pidfd);
    }
}

TEST_CASE("kill_and_reap kills and reaps every process, bounded in time", "[process][spawn]") {
    std::vector<int> pidfds;
    for (int i = 0; i < 3; ++i) {
        int pidfd = -1;
        const long pid = posix::spawn_shared(
            posix::spawn_method::pidfd,
            [](void*) -> int {
                ::execl("/bin/sleep", "sleep", "600", static_cast<char*>(nullptr));
                ::_exit(127);
            },
            nullptr, &pidfd);
        REQUIRE(pid > 0);
        pidfds.push_back(pidfd);
    }
    CHECK(posix::kill_and_reap(pidfds, std::chrono::seconds(10)) == 0);
    for (int fd : pidfds) {
        siginfo_t info{};
        // Already reaped: nothing left to wait for.
        CHECK(::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(fd), &info,
                       WEXITED | WNOHANG) == -1);
        CHECK(errno == ECHILD);
        ::close(fd);
    }
}
