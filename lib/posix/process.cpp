#include "process.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <unordered_map>

#include <fcntl.h>
#include <linux/sched.h>
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

[[noreturn]] void run_child(const child_setup& c) noexcept {
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig = 1; sig < NSIG; ++sig) {
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        ::sigaction(sig, &dfl, nullptr);  // fails harmlessly for SIGKILL, SIGSTOP, ...
    }
    settle_child(c.parent, c.channel, c.log, c.devnull);
    ::execve(c.executable, c.argv, c.envp);
    const int err = errno;
    write_all(2, c.exec_failure_prefix->data(), c.exec_failure_prefix->size());
    const char* why = ::strerrordesc_np(err);
    write_all(2, why, std::strlen(why));
    write_all(2, "\n", 1);
    ::_exit(127);
}

core::exit_status to_exit_status(const siginfo_t& info, const rusage& usage) {
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
    if (usage.ru_maxrss > 0) {
        status.peak_rss_bytes = static_cast<std::uint64_t>(usage.ru_maxrss) * 1024;
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
    std::unordered_map<std::string_view, std::size_t> last;
    for (std::size_t i = 0; i < env.size(); ++i) {
        last[env_name(env[i])] = i;
    }
    for (std::size_t i = 0; i < env.size(); ++i) {
        if (last.at(env_name(env[i])) == i) {
            strings_.push_back(env[i]);  // a copy: `last` points into env
        }
    }
    slot_entry_ = strings_.size() - 2;
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
    unique_fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!devnull) {
        return "cannot open /dev/null: " + errno_text(errno);
    }

    const child_setup setup{executable_.c_str(),   argv_.data(), envp_.data(),
                            &exec_failure_prefix_, ::getpid(),   child_channel.get(),
                            child_log.get(),       devnull.get()};
    int pidfd = -1;
    long pid = -1;
    // Fall back, once for the process, when a method is not available here (clone3 is
    // refused with ENOSYS by older kernels, Docker's default seccomp profile and valgrind).
    static std::atomic<int> preferred{static_cast<int>(spawn_method::clone3)};
    for (int m = preferred.load(std::memory_order_relaxed);; ++m) {
        const auto method = static_cast<spawn_method>(m);
        pid = create_child(method, &pidfd);
        const bool unavailable = pid < 0 && (errno == ENOSYS || errno == EPERM ||
                                             (errno == EINVAL && method != spawn_method::fork));
        if (!unavailable || method == spawn_method::fork) {
            preferred.store(m, std::memory_order_relaxed);
            break;
        }
    }
    if (pid < 0) {
        return "cannot create a worker process: " + errno_text(errno);
    }
    if (pid == 0) {
        run_child(setup);
    }
    if (pidfd < 0) {
        // Created by fork(): the pidfd is opened now. Only if the host ignores SIGCHLD could
        // the child have been reaped already (and then this fails cleanly).
        pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
        if (pidfd < 0) {
            const std::string why = errno_text(errno);
            ::kill(static_cast<pid_t>(pid), SIGKILL);
            return "cannot open a pidfd for worker " + std::to_string(pid) + ": " + why;
        }
    }
    unique_fd owned_pidfd(pidfd);
    ::fcntl(pidfd, F_SETFD, FD_CLOEXEC);
    if (!set_nonblocking(host_channel.get()) || !set_nonblocking(host_log.get())) {
        const std::string why = errno_text(errno);
        send_signal(pidfd, SIGKILL);
        reap_blocking(pidfd);
        return "cannot make worker descriptors non-blocking: " + why;
    }
    return spawned_process{static_cast<int>(pid), std::move(owned_pidfd), std::move(host_channel),
                           std::move(host_log)};
}

std::optional<core::exit_status> try_reap(int pidfd) {
    siginfo_t info{};
    rusage usage{};
    for (;;) {
        // The raw system call, because glibc's waitid() does not return the rusage.
        const long r = ::syscall(SYS_waitid, P_PIDFD, pidfd, &info, WEXITED | WNOHANG, &usage);
        if (r == 0) {
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
    return to_exit_status(info, usage);
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

core::exit_status reap_blocking(int pidfd) {
    siginfo_t info{};
    rusage usage{};
    for (;;) {
        const long r = ::syscall(SYS_waitid, P_PIDFD, pidfd, &info, WEXITED, &usage);
        if (r == 0) {
            return to_exit_status(info, usage);
        }
        if (errno != EINTR) {
            return {};
        }
    }
}

bool send_signal(int pidfd, int signo) noexcept {
    return ::syscall(SYS_pidfd_send_signal, pidfd, signo, nullptr, 0) == 0;
}

}  // namespace torchpool::posix
