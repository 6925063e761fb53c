// Creating processes and owning descriptors: the pieces that the pool (host) and the fork
// server (worker SDK) share.
#pragma once

#include <cerrno>
#include <cstddef>
#include <utility>

#include <unistd.h>

/// Code that runs in a child sharing the host's memory is not instrumented by the
/// sanitizers: their bookkeeping (ThreadSanitizer's shadow stack of the calling thread) is
/// the host thread's, which the child must not change.
#define TORCHPOOL_SHARED_CHILD __attribute__((no_sanitize("address", "thread", "undefined")))

namespace torchpool::posix {

/// The fd number on which every worker finds its channel to the pool.
inline constexpr int channel_fd = 3;
/// Where a worker finds the pool's input memory (a read-only memfd), when there is one.
inline constexpr int inputs_fd = 4;

/// Owns one file descriptor.
class unique_fd {
public:
    unique_fd() noexcept = default;
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    unique_fd& operator=(unique_fd&& other) noexcept {
        if (this != &other) {
            reset(std::exchange(other.fd_, -1));
        }
        return *this;
    }
    ~unique_fd() { reset(); }

    int get() const noexcept { return fd_; }
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset(int fd = -1) noexcept;
    explicit operator bool() const noexcept { return fd_ >= 0; }

private:
    int fd_ = -1;
};

/// A system call that leaves errno alone: the result, or -errno on failure. A child made by
/// spawn_shared runs on the thread-local storage of the host thread that made it, so it
/// must not write errno (the host thread is running on meanwhile); glibc's syscall() does.
TORCHPOOL_SHARED_CHILD inline long raw_syscall(long number, long a = 0, long b = 0, long c = 0,
                                               long d = 0, long e = 0, long f = 0) noexcept {
#if defined(__x86_64__)
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long result;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return result;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = number;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
#else
    const long result = ::syscall(number, a, b, c, d, e, f);  // see spawn_waits_for_exec
    return result < 0 ? -errno : result;
#endif
}

/// Whether spawn_shared's caller waits until the child has exec'd (CLONE_VFORK): only where
/// raw_syscall cannot leave errno alone.
#if defined(__x86_64__) || defined(__aarch64__)
inline constexpr bool spawn_waits_for_exec = false;
#else
inline constexpr bool spawn_waits_for_exec = true;
#endif

/// How a child of spawn_shared gets its pidfd. `pidfd`: the kernel makes it with the child
/// (CLONE_PIDFD), so no pid is ever trusted; `pidfd_open`: where CLONE_PIDFD is refused, it
/// is opened right after (the child is ours and not yet reaped, so the pid is still its).
enum class spawn_method { pidfd, pidfd_open };

/// The memory a child of spawn_shared runs in until its exec: a stack of its own and a data
/// area with everything it reads, which the caller fills before the spawn. The caller may
/// change or free its own memory as soon as spawn_shared returns; this stays mapped until
/// the child has exec'd or exited, which the kernel tells by clearing a word in it
/// (CLONE_CHILD_CLEARTID, done when the child lets go of our memory).
class child_memory {
public:
    /// Maps a 64 KiB stack (with a guard page) and `data_bytes` of room. nullptr with errno.
    static child_memory* create(std::size_t data_bytes) noexcept;
    /// Unmaps memory that was never given to spawn_shared.
    static void destroy(child_memory* memory) noexcept;

    /// `bytes` of the data area, aligned to `align`; nullptr if it is full.
    void* allocate(std::size_t bytes, std::size_t align) noexcept;
    /// A NUL-terminated copy of `size` chars at `text` in the data area; nullptr if full.
    char* copy(const char* text, std::size_t size) noexcept;

    /// True once the child has exec'd or exited (or before any spawn).
    bool released_by_child() const noexcept;

private:
    friend long spawn_shared(spawn_method, int (*)(void*), void*, child_memory*, int*) noexcept;
    child_memory() = default;
    char* stack_top() noexcept { return reinterpret_cast<char*>(this); }

    int child_tid_ = 0;  // the kernel clears it when the child lets go (CLONE_CHILD_CLEARTID)
    std::size_t mapping_size_ = 0;
    char* mapping_ = nullptr;
    char* next_ = nullptr;  // in the data area, which follows this header to the end
};

/// Runs `child(arg)` in a new process that shares our memory (CLONE_VM) until it calls
/// execve or exits, so nothing of the caller's address space is copied, however large it
/// is, and the caller does not wait for the exec (see spawn_waits_for_exec): the calling
/// thread spends only the clone system call. The child runs on `memory`'s stack with every
/// signal blocked (so no handler of the caller runs in it) and the caller's thread-local
/// storage, concurrently with the caller: it may read only `memory` (put `arg` there) and
/// must make raw_syscall calls only (no errno, no allocation, no sanitized function), ending
/// with execve or exit (if `child` returns, the child exits with its result). Takes
/// `memory`, which is unmapped once the child is done with it (release_child_memory).
/// Returns the pid and sets `*pidfd`, or returns -1 with errno.
long spawn_shared(spawn_method method, int (*child)(void*), void* arg, child_memory* memory,
                  int* pidfd) noexcept;

/// Unmaps the memory of spawn_shared's children that have exec'd or exited since it was
/// last called (each spawn_shared calls it). Returns how many are still in use, by children
/// that have neither exec'd nor exited yet.
std::size_t release_child_memory() noexcept;

/// Reaps, without waiting, the children spawn_shared killed because no pidfd could be opened
/// for them (each spawn_shared calls it, as does kill_and_reap). Returns how many are not
/// reaped yet.
std::size_t reap_strays() noexcept;

/// Creates a child of our own parent (clone3 with CLONE_PARENT | CLONE_PIDFD): the fork
/// server's way to make workers that the pool, not the server, reaps. The child inherits
/// our exit signal (SIGCHLD), as the kernel wants with CLONE_PARENT. Like fork(): the pid
/// in the parent, 0 in the child, -1 with errno (ENOSYS where clone3 is refused). The
/// child's own thread id is where glibc looks for it and its robust-futex list is
/// registered, as after fork(); atfork handlers are the caller's business (worker/atfork).
long create_sibling(int* pidfd) noexcept;

/// The signal a worker gets when the host thread that created it ends (PR_SET_PDEATHSIG).
///
/// The kernel sends it when the creating *thread* exits, not only when the host process
/// does; so it is not SIGKILL (a host whose io threads come and go would lose workers), but
/// a signal whose default action is to ignore it. The worker SDK catches it and dies only
/// if its parent is no longer the host process (`getppid()` is then a reaper), which covers
/// a host that is SIGKILLed; until the SDK is set up, the signal is ignored and the SDK
/// checks the parent once itself (see worker/host_watch).
inline constexpr int parent_death_signal = 23;  // SIGURG

/// The environment variable in which a worker finds the host's process id.
inline constexpr const char* host_pid_variable = "TORCHPOOL_HOST_PID";

/// In a new worker process, between its creation and its work; async-signal-safe. Asks for
/// `parent_death_signal` when its parent goes (exits with 126 if `parent` is already gone), puts
/// `log` on fds 1 and 2, `channel` on fd 3, unless -1 `stdin_fd` on fd 0 and `inputs` (the
/// pool's input memory) on fd 4, and closes every other descriptor above those. Exits with
/// 126 if it cannot.
TORCHPOOL_SHARED_CHILD void settle_child(int parent, int channel, int log, int stdin_fd,
                                         int inputs) noexcept;

/// Ends the process at once (exit_group), running nothing; for a child before its exec.
[[noreturn]] TORCHPOOL_SHARED_CHILD void exit_now(int code) noexcept;

/// Writes all of `size` bytes, retrying on EINTR; async-signal-safe, errno untouched. False
/// on failure.
TORCHPOOL_SHARED_CHILD bool write_all(int fd, const char* text, std::size_t size) noexcept;

/// Sets O_NONBLOCK. False with errno on failure.
bool set_nonblocking(int fd) noexcept;

}  // namespace torchpool::posix
