#include "process.hpp"

#include "limits.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <unordered_map>

#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace torchpool::posix {

namespace {

std::string errno_text(int err) {
    return std::strerror(err);
}

std::string_view env_name(std::string_view entry) {
    return entry.substr(0, entry.find('='));
}

// Everything the child needs, prepared by the parent so that the child only makes
// async-signal-safe calls between clone3 and exec.
struct child_setup {
    const char* executable;
    char* const* argv;
    char* const* envp;
    const std::string* exec_failure_prefix;
    pid_t parent;
    int channel;
    int log;
    int devnull;
};

// The new process, until exec: it shares the host's memory (spawn_shared), with every
// signal blocked. Handlers are reset before signals are let in, so none of the host's runs.
// Raw system calls only (see settle_child): no wrapper a sanitizer intercepts.
TORCHPOOL_SHARED_CHILD int run_child(void* arg) noexcept {
    const auto& c = *static_cast<const child_setup*>(arg);
    struct kernel_sigaction {  // the kernel's layout, for rt_sigaction
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)();
        std::uint64_t mask;
    };
    const kernel_sigaction dfl{SIG_DFL, 0, nullptr, 0};
    for (int sig = 1; sig < NSIG; ++sig) {
        // Fails harmlessly for SIGKILL, SIGSTOP and the numbers glibc keeps for itself.
        ::syscall(SYS_rt_sigaction, sig, &dfl, nullptr, sizeof dfl.mask);
    }
    const std::uint64_t none = 0;
    ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, nullptr, sizeof none);
    settle_child(c.parent, c.channel, c.log, c.devnull);
    if (const auto soft = soft_fd_limit_for_children()) {
        // The host's own limit, which the pool raised for itself (after settle_child: the
        // descriptors above it are closed by now).
        rlimit limit{};
        if (::syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, nullptr, &limit) == 0 &&
            *soft < limit.rlim_cur) {
            limit.rlim_cur = *soft;
            ::syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, &limit, nullptr);
        }
    }
    ::syscall(SYS_execve, c.executable, c.argv, c.envp);
    const int err = errno;  // (the host thread's errno, shared; it is suspended until now)
    write_all(2, c.exec_failure_prefix->data(), c.exec_failure_prefix->size());
    const char* why = ::strerrordesc_np(err);
    write_all(2, why, std::strlen(why));
    write_all(2, "\n", 1);
    exit_now(127);
}

core::exit_status to_exit_status(const siginfo_t& info) {
    core::exit_status status;
    switch (info.si_code) {
        case CLD_EXITED:
            status.exit_code = info.si_status;
            break;
        case CLD_DUMPED:
            status.core_dumped = true;
            [[fallthrough]];
        case CLD_KILLED:
            status.signal = info.si_status;
            break;
        default:
            break;
    }
    return status;
}

}  // namespace

launcher::launcher(const worker_params& params, const std::vector<std::string>& extra_env,
                   int channel_type)
    : executable_(params.executable), channel_type_(channel_type) {
    strings_.push_back(params.executable);
    strings_.insert(strings_.end(), params.args.begin(), params.args.end());
    const std::size_t argc = strings_.size();

    // The host's environment, the pool's defaults, the user's entries, then what the pool
    // must decide itself; of entries with the same name, the last one wins.
    std::vector<std::string> env;
    for (char** e = environ; e && *e; ++e) {
        env.emplace_back(*e);
    }
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    env.insert(env.end(), params.env.begin(), params.env.end());
    env.push_back("TORCHPOOL_WORKER_SLOT=0000000000");  // room for any slot, rewritten by spawn
    env.push_back("TORCHPOOL_CHANNEL_FD=" + std::to_string(channel_fd));
    env.push_back(std::string(host_pid_variable) + "=" + std::to_string(::getpid()));
    std::unordered_map<std::string_view, std::size_t> last;
    for (std::size_t i = 0; i < env.size(); ++i) {
        last[env_name(env[i])] = i;
    }
    for (std::size_t i = 0; i < env.size(); ++i) {
        if (last.at(env_name(env[i])) == i) {
            strings_.push_back(env[i]);  // a copy: `last` points into env
        }
    }
    for (std::size_t i = argc; i < strings_.size(); ++i) {
        if (env_name(strings_[i]) == "TORCHPOOL_WORKER_SLOT") {
            slot_entry_ = i;
        }
    }
    // strings_ no longer changes size, so these pointers stay valid.
    for (std::size_t i = 0; i < strings_.size(); ++i) {
        (i < argc ? argv_ : envp_).push_back(strings_[i].data());
    }
    argv_.push_back(nullptr);
    envp_.push_back(nullptr);
    exec_failure_prefix_ = "torchpool: cannot start worker executable '" + executable_ + "': ";
}

std::variant<spawned_process, std::string> launcher::spawn(std::size_t slot) {
    if (::access(executable_.c_str(), X_OK) != 0) {
        return "cannot start worker executable '" + executable_ + "': " + errno_text(errno);
    }
    // Rewritten in place: the entry has room for any 10-digit number, and envp_ points at it.
    auto& slot_entry = strings_[slot_entry_];
    const std::size_t value_at = slot_entry.find('=') + 1;
    std::snprintf(slot_entry.data() + value_at, slot_entry.size() - value_at + 1, "%zu", slot);
    int channel[2];
    if (::socketpair(AF_UNIX, channel_type_ | SOCK_CLOEXEC, 0, channel) != 0) {
        return "cannot create a worker channel (socketpair): " + errno_text(errno);
    }
    unique_fd host_channel(channel[0]), child_channel(channel[1]);
    int log[2];
    if (::pipe2(log, O_CLOEXEC) != 0) {
        return "cannot create a worker log pipe: " + errno_text(errno);
    }
    unique_fd host_log(log[0]), child_log(log[1]);
    if (!set_nonblocking(host_channel.get()) || !set_nonblocking(host_log.get())) {
        return "cannot make worker descriptors non-blocking: " + errno_text(errno);
    }
    unique_fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!devnull) {
        return "cannot open /dev/null: " + errno_text(errno);
    }

    child_setup setup{executable_.c_str(),   argv_.data(), envp_.data(),
                      &exec_failure_prefix_, ::getpid(),   child_channel.get(),
                      child_log.get(),       devnull.get()};
    int pidfd = -1;
    long pid = -1;
    // Fall back, once for the process, where CLONE_PIDFD is refused (kernels before 5.2,
    // some seccomp profiles).
    static std::atomic<int> preferred{static_cast<int>(spawn_method::pidfd)};
    for (int m = preferred.load(std::memory_order_relaxed);; ++m) {
        const auto method = static_cast<spawn_method>(m);
        pid = spawn_shared(method, run_child, &setup, &pidfd);
        const bool unavailable = pid < 0 && method == spawn_method::pidfd &&
                                 (errno == ENOSYS || errno == EPERM || errno == EINVAL);
        if (!unavailable) {
            preferred.store(m, std::memory_order_relaxed);
            break;
        }
    }
    if (pid < 0) {
        return "cannot create a worker process: " + errno_text(errno);
    }
    return spawned_process{static_cast<int>(pid), unique_fd(pidfd), std::move(host_channel),
                           std::move(host_log)};
}

std::optional<core::exit_status> try_reap(int pidfd) {
    siginfo_t info{};
    for (;;) {
        // (Not its rusage: ru_maxrss of a child counts the memory of the process it was
        // copied from, the host's or the fork server's, so it says nothing of the worker.)
        if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info,
                     WEXITED | WNOHANG) == 0) {
            break;
        }
        if (errno == EINTR) {
            continue;
        }
        // ECHILD: someone else reaped it (the host called waitpid(-1)); the status is lost.
        return core::exit_status{};
    }
    if (info.si_pid == 0) {
        return std::nullopt;  // a spurious wake-up: still running
    }
    return to_exit_status(info);
}

bool has_exited(int pidfd) {
    siginfo_t info{};
    for (;;) {
        if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info,
                     WEXITED | WNOHANG | WNOWAIT) == 0) {
            return info.si_pid != 0;
        }
        if (errno != EINTR) {
            return true;  // already reaped
        }
    }
}

std::size_t kill_and_reap(std::span<const int> pidfds, std::chrono::milliseconds limit) {
    for (int fd : pidfds) {
        send_signal(fd, SIGKILL);
    }
    const auto deadline = std::chrono::steady_clock::now() + limit;
    std::vector<pollfd> waiting;
    for (int fd : pidfds) {
        waiting.push_back({fd, POLLIN, 0});
    }
    for (;;) {
        // Reap what has exited; keep waiting for the rest.
        std::erase_if(waiting, [](const pollfd& p) { return try_reap(p.fd).has_value(); });
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (waiting.empty() || left.count() <= 0) {
            return waiting.size();
        }
        if (::poll(waiting.data(), waiting.size(), static_cast<int>(left.count()) + 1) < 0 &&
            errno != EINTR) {
            return waiting.size();
        }
    }
}

std::optional<worker_memory> read_memory(int pid) {
    // smaps_rollup sums the process's mappings in the kernel: one short read.
    const std::string path = "/proc/" + std::to_string(pid) + "/smaps_rollup";
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return std::nullopt;
    }
    char text[4096];
    std::size_t size = 0;
    for (ssize_t n;
         size < sizeof text - 1 && (n = ::read(fd, text + size, sizeof text - 1 - size)) != 0;) {
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        size += static_cast<std::size_t>(n);
    }
    ::close(fd);
    text[size] = '\0';
    auto kib = [&](const char* field) -> std::optional<std::uint64_t> {
        const char* at = std::strstr(text, field);
        if (!at) {
            return std::nullopt;
        }
        return std::strtoull(at + std::strlen(field), nullptr, 10) * 1024;
    };
    const auto rss = kib("\nRss:"), pss = kib("\nPss:");
    const auto clean = kib("\nPrivate_Clean:"), dirty = kib("\nPrivate_Dirty:");
    if (!rss || !pss || !clean || !dirty) {
        return std::nullopt;  // a zombie, or a kernel without these fields
    }
    return worker_memory{.private_bytes = *clean + *dirty, .pss_bytes = *pss, .rss_bytes = *rss};
}

bool send_signal(int pidfd, int signo) noexcept {
    return ::syscall(SYS_pidfd_send_signal, pidfd, signo, nullptr, 0) == 0;
}

}  // namespace torchpool::posix
