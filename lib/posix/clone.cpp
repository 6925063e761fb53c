#include "clone.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <mutex>
#include <new>
#include <vector>

#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace torchpool::posix {

static_assert(parent_death_signal == SIGURG);

void unique_fd::reset(int fd) noexcept {
    if (fd_ >= 0) {
        ::close(fd_);
    }
    fd_ = fd;
}

// raw_syscall only: a child that shares the host's memory (spawn_shared) runs beside the
// host's threads, on one's thread-local storage; glibc's wrappers would write its errno,
// and those that sanitizers intercept (sigaction, dup2, _exit, ...) the sanitizer's state
// of that thread.
[[noreturn]] TORCHPOOL_SHARED_CHILD void exit_now(int code) noexcept {
    for (;;) {
        raw_syscall(SYS_exit_group, code);
    }
}

namespace {

// (Functions, not lambdas: a lambda does not inherit TORCHPOOL_SHARED_CHILD, and an
// instrumented call would update the sanitizer's record of the host thread.)
TORCHPOOL_SHARED_CHILD int move_up(int fd) noexcept {
    return static_cast<int>(raw_syscall(SYS_fcntl, fd, F_DUPFD, 10));
}

TORCHPOOL_SHARED_CHILD bool put_at(int fd, int target) noexcept {
    return raw_syscall(SYS_dup3, fd, target, 0) >= 0;
}

}  // namespace

TORCHPOOL_SHARED_CHILD void settle_child(int parent, int channel, int log, int stdin_fd,
                                         int inputs) noexcept {
    raw_syscall(SYS_prctl, PR_SET_PDEATHSIG, parent_death_signal);
    if (raw_syscall(SYS_getppid) != parent) {
        exit_now(126);  // the parent died before we could ask to die with it
    }
    // Move our ends above the target numbers first, in case they are 0..4 themselves.
    const int moved_channel = move_up(channel);
    const int moved_log = move_up(log);
    const int moved_stdin = stdin_fd >= 0 ? move_up(stdin_fd) : -1;
    const int moved_inputs = inputs >= 0 ? move_up(inputs) : -1;
    if (moved_channel < 0 || moved_log < 0 || (stdin_fd >= 0 && moved_stdin < 0) ||
        (inputs >= 0 && moved_inputs < 0) || (moved_stdin >= 0 && !put_at(moved_stdin, 0)) ||
        !put_at(moved_log, 1) || !put_at(moved_log, 2) || !put_at(moved_channel, channel_fd) ||
        (moved_inputs >= 0 && !put_at(moved_inputs, inputs_fd))) {
        exit_now(126);
    }
    raw_syscall(SYS_close_range, (inputs >= 0 ? inputs_fd : channel_fd) + 1, ~0U, 0);
}

TORCHPOOL_SHARED_CHILD bool write_all(int fd, const char* text, std::size_t size) noexcept {
    while (size > 0) {
        const long n =
            raw_syscall(SYS_write, fd, reinterpret_cast<long>(text), static_cast<long>(size));
        if (n == -EINTR) {
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

namespace {

using clone_function = int (*)(int (*)(void*), void*, int, void*, ...);

// glibc's clone itself. ThreadSanitizer intercepts clone and, in the child, resets its
// registry of threads as after fork(); a child that shares our memory would do that to the
// host's registry (every other thread then counts as gone, and pthread_join orders
// nothing). So under ThreadSanitizer we call glibc's definition, found in libc's own
// scope, and the sanitizer never learns of a child it could not model anyway.
clone_function glibc_clone() noexcept {
#if defined(__SANITIZE_THREAD__)
    static const clone_function real = [] {
        void* libc = ::dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
        void* symbol = libc != nullptr ? ::dlsym(libc, "clone") : nullptr;
        return symbol != nullptr ? reinterpret_cast<clone_function>(symbol) : &::clone;
    }();
    return real;
#else
    return &::clone;
#endif
}

}  // namespace

namespace {

constexpr std::size_t page = 4096, guard_size = page, stack_size = 64 * 1024;

// The memory of children that have not exec'd or exited yet, as far as we last looked.
std::mutex children_memory_mutex;
std::vector<child_memory*> children_memory;

}  // namespace

child_memory* child_memory::create(std::size_t data_bytes) noexcept {
    const std::size_t header = (sizeof(child_memory) + 63) / 64 * 64;
    const std::size_t size =
        (guard_size + stack_size + header + data_bytes + page - 1) / page * page;
    void* mapping = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
    if (mapping == MAP_FAILED) {
        return nullptr;
    }
    ::mprotect(mapping, guard_size, PROT_NONE);
    char* base = static_cast<char*>(mapping);
    // The header sits where the stack begins (it grows down, away from it), the data after.
    auto* memory = new (base + guard_size + stack_size) child_memory();
    memory->mapping_ = base;
    memory->mapping_size_ = size;
    memory->next_ = base + guard_size + stack_size + header;
    return memory;
}

void child_memory::destroy(child_memory* memory) noexcept {
    if (memory != nullptr) {
        ::munmap(memory->mapping_, memory->mapping_size_);
    }
}

void* child_memory::allocate(std::size_t bytes, std::size_t align) noexcept {
    const auto at = (reinterpret_cast<std::uintptr_t>(next_) + align - 1) / align * align;
    if (at + bytes > reinterpret_cast<std::uintptr_t>(mapping_ + mapping_size_)) {
        return nullptr;
    }
    next_ = reinterpret_cast<char*>(at + bytes);
    return reinterpret_cast<void*>(at);
}

char* child_memory::copy(const char* text, std::size_t size) noexcept {
    auto* to = static_cast<char*>(allocate(size + 1, 1));
    if (to != nullptr) {
        std::memcpy(to, text, size);
        to[size] = '\0';
    }
    return to;
}

bool child_memory::released_by_child() const noexcept {
    return __atomic_load_n(&child_tid_, __ATOMIC_ACQUIRE) == 0;
}

namespace {

// Children killed because no pidfd could be opened for them, not reaped yet.
std::mutex strays_mutex;
std::vector<pid_t> strays;  // guarded by strays_mutex

}  // namespace

std::size_t release_child_memory() noexcept {
    std::lock_guard lock(children_memory_mutex);
    std::erase_if(children_memory, [](child_memory* memory) {
        if (!memory->released_by_child()) {
            return false;
        }
        child_memory::destroy(memory);
        return true;
    });
    return children_memory.size();
}

namespace {

// Valgrind (bench/instructions.sh counts the host's instructions with it) runs a clone that
// shares our memory without waiting for the exec only as a thread, and gives up on ours; with
// CLONE_VFORK it makes a fork of it. Its preloaded library says it is there.
bool under_valgrind() noexcept {
    static const bool yes = [] {
        const char* preload = std::getenv("LD_PRELOAD");
        return preload != nullptr && std::strstr(preload, "vgpreload") != nullptr;
    }();
    return yes;
}

}  // namespace

long spawn_shared(spawn_method method, int (*child)(void*), void* arg, child_memory* memory,
                  int* pidfd) noexcept {
    *pidfd = -1;
    release_child_memory();
    reap_strays();
    // The kernel clears child_tid_ when the child lets go of our memory (exec or exit).
    int flags = CLONE_VM | CLONE_CHILD_CLEARTID | SIGCHLD;
    const bool waits = spawn_waits_for_exec || under_valgrind();
    if (waits) {
        flags |= CLONE_VFORK;
    }
    if (method == spawn_method::pidfd) {
        flags |= CLONE_PIDFD;
    }
    memory->child_tid_ = -1;
    sigset_t all, old;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    // With CLONE_PIDFD the kernel writes the pidfd where the parent's tid would go.
    const long pid =
        glibc_clone()(child, memory->stack_top(), flags, arg, pidfd, nullptr, &memory->child_tid_);
    const int err = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) {
        child_memory::destroy(memory);
        errno = err;
        return -1;
    }
    if (waits) {
        // The child has exec'd or exited (or, under valgrind, runs in a copy of our memory).
        child_memory::destroy(memory);
    } else {
        std::lock_guard lock(children_memory_mutex);
        children_memory.push_back(memory);
    }
    if (method == spawn_method::pidfd_open) {
        *pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
        if (*pidfd < 0) {
            // No pidfd (no descriptor left, most likely): the child is killed, and reaped
            // without waiting (reap_strays, at this and every later spawn): a child stuck in
            // an uninterruptible sleep must not hold the caller's thread.
            const int open_err = errno;
            ::kill(static_cast<pid_t>(pid), SIGKILL);
            {
                std::lock_guard lock(strays_mutex);
                strays.push_back(static_cast<pid_t>(pid));
            }
            reap_strays();
            errno = open_err;
            return -1;
        }
    }
    return pid;
}

std::size_t reap_strays() noexcept {
    std::lock_guard lock(strays_mutex);
    std::erase_if(strays, [](pid_t pid) {
        siginfo_t info{};
        info.si_pid = 0;
        // Ours and unreaped: this collects it once it has exited (ECHILD: gone already).
        const int r = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG);
        return r != 0 || info.si_pid == pid;
    });
    return strays.size();
}

long create_sibling(int* pidfd) noexcept {
    *pidfd = -1;
    clone_args args{};
    args.flags = CLONE_PARENT | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<std::uint64_t>(pidfd);
    args.exit_signal = 0;  // must be 0 with CLONE_PARENT; the child gets our SIGCHLD
    // What glibc's fork does besides the system call. (1) The kernel writes the child's
    // thread id where glibc keeps this thread's (the address glibc gave set_tid_address),
    // so that pthread_self() in the child is the child's own thread: without it,
    // pthread_setaffinity_np(pthread_self(), ...) in a worker would change the server.
    int* tid_address = nullptr;
    if (::prctl(PR_GET_TID_ADDRESS, &tid_address) == 0 && tid_address != nullptr) {
        args.flags |= CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID;
        args.child_tid = reinterpret_cast<std::uint64_t>(tid_address);
    }
    // (2) The kernel forgets the robust-futex list in a child; glibc registers it again.
    void* robust_head = nullptr;
    std::size_t robust_size = 0;
    ::syscall(SYS_get_robust_list, 0, &robust_head, &robust_size);
    const long pid = ::syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0 && robust_head != nullptr) {
        ::syscall(SYS_set_robust_list, robust_head, robust_size);
    }
    return pid;
}

}  // namespace torchpool::posix
