// Creating a child that shares our memory until exec (CLONE_VM), both ways, each reaped
// through its pidfd; one whose pidfd cannot be opened, reaped without waiting for it.
#include "posix/process.hpp"

#include <catch2/catch.hpp>

#include <cerrno>

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace torchpool;

namespace {

// What the child reads, in its own memory.
struct child_args {
    int* note;    // in the test's memory: the child writes its pid there
    int read_fd;  // the child exits with the byte it reads there (99 if none comes)
};

TORCHPOOL_SHARED_CHILD int wait_write_exit(void* arg) {
    const auto& a = *static_cast<const child_args*>(arg);
    posix::raw_syscall(SYS_close, -1);  // fails: EBADF, which must not reach our errno
    pollfd in{a.read_fd, POLLIN, 0};
    timespec ten_seconds{10, 0};
    unsigned char byte = 99;
    if (posix::raw_syscall(SYS_ppoll, reinterpret_cast<long>(&in), 1,
                           reinterpret_cast<long>(&ten_seconds), 0, 8) == 1) {
        posix::raw_syscall(SYS_read, a.read_fd, reinterpret_cast<long>(&byte), 1);
    }
    *a.note = static_cast<int>(posix::raw_syscall(SYS_getpid));
    posix::exit_now(byte);
}

}  // namespace

TEST_CASE(
    "spawn_shared: the child shares our memory, the caller does not wait for its exec, "
    "its errno is not ours, and its pidfd reaps the exact exit status",
    "[process][spawn]") {
    for (auto method : {posix::spawn_method::pidfd, posix::spawn_method::pidfd_open}) {
        CAPTURE(static_cast<int>(method));
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        const std::size_t in_use_before = posix::release_child_memory();
        auto* memory = posix::child_memory::create(sizeof(child_args));
        REQUIRE(memory);
        int note = 0;
        auto* args = static_cast<child_args*>(memory->allocate(sizeof(child_args), 8));
        *args = {&note, fds[0]};
        int pidfd = -1;
        const long pid = posix::spawn_shared(method, wait_write_exit, args, memory, &pidfd);
        REQUIRE(pid > 0);
        REQUIRE(pidfd >= 0);
        if (!posix::spawn_waits_for_exec) {
            // We are back while the child still waits for us: its memory is still in use.
            CHECK(posix::release_child_memory() == in_use_before + 1);
            CHECK(!memory->released_by_child());
        }
        errno = 0;
        const unsigned char seven = 7;
        REQUIRE(::write(fds[1], &seven, 1) == 1);
        pollfd exited{pidfd, POLLIN, 0};
        REQUIRE(::poll(&exited, 1, 20'000) == 1);
        CHECK(errno == 0);  // the child's failed close(-1) set no errno of ours
        auto status = posix::try_reap(pidfd);
        REQUIRE(status);
        CHECK(status->exit_code == 7);  // so it read the byte we wrote after spawn_shared
        CHECK(!status->signal);
        CHECK(note == pid);  // written into our memory (CLONE_VM: not a copy)
        // Gone, so its memory goes at the next look.
        CHECK(posix::release_child_memory() == in_use_before);
        ::close(pidfd);
        ::close(fds[0]);
        ::close(fds[1]);
    }
}

namespace {

TORCHPOOL_SHARED_CHILD int exec_given(void* arg) {
    auto* argv = static_cast<char**>(arg);
    char* const no_env[] = {nullptr};
    posix::raw_syscall(SYS_execve, reinterpret_cast<long>(argv[0]), reinterpret_cast<long>(argv),
                       reinterpret_cast<long>(no_env));
    posix::exit_now(127);
}

// The arguments of `sleep 600`, in the child's memory (for exec_given).
char** sleep_argv(posix::child_memory& memory) {
    auto** argv = static_cast<char**>(memory.allocate(3 * sizeof(char*), sizeof(char*)));
    argv[0] = memory.copy("/bin/sleep", 10);
    argv[1] = memory.copy("600", 3);
    argv[2] = nullptr;
    return argv;
}

}  // namespace

TEST_CASE("kill_and_reap kills and reaps every process, bounded in time", "[process][spawn]") {
    std::vector<int> pidfds;
    for (int i = 0; i < 3; ++i) {
        auto* memory = posix::child_memory::create(256);
        REQUIRE(memory);
        auto** argv = sleep_argv(*memory);
        int pidfd = -1;
        const long pid =
            posix::spawn_shared(posix::spawn_method::pidfd, exec_given, argv, memory, &pidfd);
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

TEST_CASE(
    "a child whose pidfd cannot be opened is killed and reaped, and the spawn fails with "
    "the reason",
    "[process][spawn]") {
    // No descriptor left below the soft limit: the clone needs none, pidfd_open fails.
    rlimit before{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &before) == 0);
    const int lowest_free = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    REQUIRE(lowest_free >= 0);
    ::close(lowest_free);
    auto* memory = posix::child_memory::create(256);
    REQUIRE(memory);
    auto** argv = sleep_argv(*memory);
    rlimit none = before;
    none.rlim_cur = static_cast<rlim_t>(lowest_free);  // every descriptor below it is in use
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &none) == 0);
    int pidfd = -1;
    const long pid =
        posix::spawn_shared(posix::spawn_method::pidfd_open, exec_given, argv, memory, &pidfd);
    const int err = errno;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &before) == 0);
    CHECK(pid == -1);
    CHECK(err == EMFILE);
    CHECK(pidfd == -1);
    // Killed, and reaped without the spawn waiting for it: here, once it has exited.
    if (posix::reap_strays() > 0) {
        siginfo_t info{};
        REQUIRE(::waitid(P_ALL, 0, &info, WEXITED | WNOWAIT) == 0);  // exited, not reaped
        CHECK(info.si_code == CLD_KILLED);
        CHECK(info.si_status == SIGKILL);
        CHECK(posix::reap_strays() == 0);
    }
    // No child of ours is left, zombie or not.
    siginfo_t info{};
    CHECK(::waitid(P_ALL, 0, &info, WEXITED | WNOHANG) == -1);
    CHECK(errno == ECHILD);
}
