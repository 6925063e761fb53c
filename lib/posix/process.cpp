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

}  // namespace

// Everything the child reads, copied into its own memory (child_memory) by the parent, so
// that the child needs nothing the host may change meanwhile.
struct child_setup {
    const char* executable;
    char* const* argv;
    char* const* envp;
    const char* exec_failure_prefix;
    std::size_t exec_failure_prefix_size;
    pid_t parent;
    int channel;
    int log;
    int devnull;
    int inputs;
    std::uint64_t soft_fd_limit;  // 0: leave the limit as it is
};

namespace {

TORCHPOOL_SHARED_CHILD std::size_t length_of(const char* text) noexcept {
    std::size_t n = 0;
    while (text[n] != '\0') {
        ++n;
    }
    return n;
}

// The new process, until exec: it shares the host's memory (spawn_shared) and runs beside
// the host's threads, with every signal blocked. Handlers are reset before signals are let
// in, so none of the host's runs. raw_syscall only (see spawn_shared).
TORCHPOOL_SHARED_CHILD int run_child(void* arg) noexcept {
    const auto& c = *static_cast<const child_setup*>(arg);
    struct kernel_sigaction {  // the kernel's layout, for rt_sigaction
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)();
        std::uint64_t mask;
    };
    kernel_sigaction dfl;
    dfl.handler = SIG_DFL;
    dfl.flags = 0;
    dfl.restorer = nullptr;
    dfl.mask = 0;
    for (long sig = 1; sig < NSIG; ++sig) {
        // Fails harmlessly for SIGKILL, SIGSTOP and the numbers glibc keeps for itself.
        raw_syscall(SYS_rt_sigaction, sig, reinterpret_cast<long>(&dfl), 0, sizeof dfl.mask);
    }
    const std::uint64_t none = 0;
    raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&none), 0, sizeof none);
    settle_child(c.parent, c.channel, c.log, c.devnull, c.inputs);
    if (c.soft_fd_limit != 0) {
        // The host's own limit, which the pool raised for itself (after settle_child: the
        // descriptors above it are closed by now).
        rlimit limit;
        if (raw_syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, reinterpret_cast<long>(&limit)) == 0 &&
            c.soft_fd_limit < limit.rlim_cur) {
            limit.rlim_cur = c.soft_fd_limit;
            raw_syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, reinterpret_cast<long>(&limit), 0);
        }
    }
    const long failed = raw_syscall(SYS_execve, reinterpret_cast<long>(c.executable),
                                    reinterpret_cast<long>(c.argv), reinterpret_cast<long>(c.envp));
    write_all(2, c.exec_failure_prefix, c.exec_failure_prefix_size);
    const char* why = ::strerrordesc_np(static_cast<int>(-failed));
    write_all(2, why, length_of(why));
    write_all(2, "\n", 1);
    exit_now(127);
}

// Copies `strings` (a null-terminated array) into `memory`; nullptr if it does not fit.
char** copy_strings(child_memory& memory, const std::vector<char*>& strings) {
    auto** copy =
        static_cast<char**>(memory.allocate(strings.size() * sizeof(char*), alignof(char*)));
    if (copy == nullptr) {
        return nullptr;
    }
    for (std::size_t i = 0; i < strings.size(); ++i) {
        copy[i] = strings[i] ? memory.copy(strings[i], std::strlen(strings[i])) : nullptr;
        if (strings[i] && !copy[i]) {
            return nullptr;
        }
    }
    return copy;
}

exit_status to_exit_status(const siginfo_t& info) {
    exit_status status;
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
                   int channel_type, int inputs)
    : executable_(params.executable), channel_type_(channel_type), inputs_(inputs) {
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
    if (inputs >= 0) {
        env.push_back("TORCHPOOL_INPUTS_FD=" + std::to_string(inputs_fd));
    }
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

std::pair<child_memory*, child_setup*> launcher::child_copy(const child_setup& setup) const {
    // The child's own copy of all it reads: this launcher may start the next worker (and
    // rewrite the slot) before this one has exec'd.
    std::size_t bytes = sizeof(child_setup) + (argv_.size() + envp_.size()) * sizeof(char*) +
                        executable_.size() + exec_failure_prefix_.size() + 64;
    for (const auto& text : strings_) {
        bytes += text.size() + 1;
    }
    child_memory* memory = child_memory::create(bytes);
    if (memory == nullptr) {
        return {nullptr, nullptr};
    }
    auto* copy =
        static_cast<child_setup*>(memory->allocate(sizeof(child_setup), alignof(child_setup)));
    *copy = setup;
    copy->argv = copy_strings(*memory, argv_);
    copy->envp = copy_strings(*memory, envp_);
    copy->executable = memory->copy(executable_.data(), executable_.size());
    copy->exec_failure_prefix =
        memory->copy(exec_failure_prefix_.data(), exec_failure_prefix_.size());
    copy->exec_failure_prefix_size = exec_failure_prefix_.size();
    return {memory, copy};  // (bytes counts all of it, so nothing above can be null)
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

    const child_setup setup{.parent = ::getpid(),
                            .channel = child_channel.get(),
                            .log = child_log.get(),
                            .devnull = devnull.get(),
                            .inputs = inputs_,
                            .soft_fd_limit = soft_fd_limit_for_children().value_or(0)};
    int pidfd = -1;
    long pid = -1;
    // Fall back, once for the process, where CLONE_PIDFD is refused (kernels before 5.2,
    // some seccomp profiles).
    static std::atomic<int> preferred{static_cast<int>(spawn_method::pidfd)};
    for (int m = preferred.load(std::memory_order_relaxed);; ++m) {
        const auto method = static_cast<spawn_method>(m);
        auto [memory, in_memory] = child_copy(setup);
        if (memory == nullptr) {
            return "cannot map memory for a new worker process: " + errno_text(errno);
        }
        pid = spawn_shared(method, run_child, in_memory, memory, &pidfd);  // takes `memory`
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

std::optional<exit_status> try_reap(int pidfd) {
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
        return exit_status{};
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
            release_child_memory();  // of those killed before their exec
            reap_strays();
            return waiting.size();
        }
        if (::poll(waiting.data(), waiting.size(), static_cast<int>(left.count()) + 1) < 0 &&
            errno != EINTR) {
            return waiting.size();
        }
    }
}

bool send_signal(int pidfd, int signo) noexcept {
    return ::syscall(SYS_pidfd_send_signal, pidfd, signo, nullptr, 0) == 0;
}

}  // namespace torchpool::posix
