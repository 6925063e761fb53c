#include "proc.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace torchpool::posix {

namespace {

// Reads at most `size - 1` bytes of `path` into `text`, NUL-terminated; returns the length,
// or -1 if it cannot be opened.
long read_into(const char* path, char* text, std::size_t size) {
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    std::size_t used = 0;
    for (ssize_t n; used < size - 1 && (n = ::read(fd, text + used, size - 1 - used)) != 0;) {
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        used += static_cast<std::size_t>(n);
    }
    ::close(fd);
    text[used] = '\0';
    return static_cast<long>(used);
}

std::string proc_path(int pid, const char* file) {
    return "/proc/" + std::to_string(pid) + "/" + file;
}

std::string trimmed(std::string text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
        text.pop_back();
    }
    return text;
}

}  // namespace

const char* value_after(const char* text, const char* key) noexcept {
    const char* at = std::strstr(text, key);
    return at ? at + std::strlen(key) : nullptr;
}

std::optional<std::uint64_t> count_after(const char* text, const char* key) noexcept {
    const char* value = value_after(text, key);
    if (!value) {
        return std::nullopt;
    }
    return std::strtoull(value, nullptr, 10);
}

std::optional<std::string> read_small_file(const std::string& path) {
    char text[8192];
    const long n = read_into(path.c_str(), text, sizeof text);
    if (n < 0) {
        return std::nullopt;
    }
    return std::string(text, static_cast<std::size_t>(n));
}

std::optional<worker_memory> read_memory(int pid) {
    // smaps_rollup sums the process's mappings in the kernel: one short read.
    char text[4096];
    if (read_into(proc_path(pid, "smaps_rollup").c_str(), text, sizeof text) < 0) {
        return std::nullopt;
    }
    const auto rss = count_after(text, "\nRss:"), pss = count_after(text, "\nPss:");
    const auto clean = count_after(text, "\nPrivate_Clean:");
    const auto dirty = count_after(text, "\nPrivate_Dirty:");
    if (!rss || !pss || !clean || !dirty) {
        return std::nullopt;  // a zombie, or a kernel without these fields
    }
    // In kB.
    return worker_memory{.private_bytes = (*clean + *dirty) * 1024,
                         .pss_bytes = *pss * 1024,
                         .rss_bytes = *rss * 1024};
}

std::optional<worker_memory> read_memory_exactly(int pid) {
    auto memory = read_memory(pid);
    if (!memory) {
        return std::nullopt;
    }
    // The whole of /proc/PID/smaps: every mapping, a header line and then its figures in kB.
    // A few hundred kB of text for a LibTorch process, read only when a limit is near.
    const int fd = ::open(proc_path(pid, "smaps").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return memory;
    }
    std::string text;
    char chunk[65536];
    for (ssize_t n; (n = ::read(fd, chunk, sizeof chunk)) != 0;) {
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        text.append(chunk, static_cast<std::size_t>(n));
    }
    ::close(fd);
    std::uint64_t shared_rss = 0, shared_private = 0;
    bool in_shared = false;
    for (std::size_t at = 0; at < text.size();) {
        std::size_t end = text.find('\n', at);
        if (end == std::string::npos) {
            end = text.size();
        }
        const std::string_view line(text.data() + at, end - at);
        at = end + 1;
        const auto first_space = line.find(' ');
        const auto key = line.substr(0, first_space);
        if (key.empty()) {
            continue;
        }
        if (key.back() != ':') {
            // "start-end perms offset dev inode path": a new mapping.
            in_shared = line.find(tensor_memory_path) != std::string_view::npos;
            continue;
        }
        if (!in_shared || first_space == std::string_view::npos) {
            continue;
        }
        const std::uint64_t kib = std::strtoull(line.data() + first_space, nullptr, 10);
        if (key == "Rss:") {
            shared_rss += kib;
        } else if (key == "Private_Clean:" || key == "Private_Dirty:") {
            shared_private += kib;
        }
    }
    // Results it wrote that the host has not read yet are mapped by it alone, so the kernel
    // counts them as private: they are not its own memory.
    memory->private_bytes -= std::min(memory->private_bytes, shared_private * 1024);
    memory->shared_memory_bytes = shared_rss * 1024;
    return memory;
}

std::optional<std::uint64_t> available_memory() {
    char text[4096];
    if (read_into("/proc/meminfo", text, sizeof text) < 0) {
        return std::nullopt;
    }
    const auto kib = count_after(text, "MemAvailable:");
    if (!kib) {
        return std::nullopt;
    }
    return *kib * 1024;
}

std::optional<double> memory_pressure() {
    char text[512];
    if (read_into("/proc/pressure/memory", text, sizeof text) < 0) {
        return std::nullopt;
    }
    const char* value = value_after(text, "full avg10=");
    if (!value) {
        return std::nullopt;
    }
    return std::strtod(value, nullptr);
}

std::optional<std::chrono::nanoseconds> read_cpu_time(int pid) {
    char text[4096];
    if (read_into(proc_path(pid, "stat").c_str(), text, sizeof text) < 0) {
        return std::nullopt;
    }
    // After "pid (comm) ", the fields from state (3rd) on; utime and stime are the 14th
    // and 15th, in clock ticks.
    const char* close = std::strrchr(text, ')');
    if (!close) {
        return std::nullopt;
    }
    const char* at = close + 1;
    for (int field = 3; field < 14 && at; ++field) {
        at = std::strchr(at + 1, ' ');
    }
    if (!at) {
        return std::nullopt;
    }
    char* end = nullptr;
    const unsigned long long user = std::strtoull(at, &end, 10);
    const unsigned long long system = std::strtoull(end, nullptr, 10);
    static const long ticks = ::sysconf(_SC_CLK_TCK);
    if (ticks <= 0) {
        return std::nullopt;
    }
    return std::chrono::nanoseconds((user + system) * (1'000'000'000ULL / ticks));
}

std::optional<worker_activity> read_activity(int pid) {
    char text[4096];
    if (read_into(proc_path(pid, "stat").c_str(), text, sizeof text) < 0) {
        return std::nullopt;
    }
    worker_activity a;
    // "pid (comm) S ...": the command may hold spaces and parentheses; it ends at the last ')'.
    if (const char* close = std::strrchr(text, ')'); close && close[1] == ' ') {
        a.state = close[2];
    }
    if (read_into(proc_path(pid, "wchan").c_str(), text, sizeof text) > 0 &&
        std::strcmp(text, "0") != 0) {
        a.wchan = text;
    }
    if (read_into(proc_path(pid, "syscall").c_str(), text, sizeof text) > 0) {
        a.syscall_line = trimmed(text);
        char* end = nullptr;
        const long number = std::strtol(text, &end, 10);
        if (end != text && number >= 0) {  // -1: blocked, but not in a system call
            const char* name = syscall_name(number);
            a.syscall = *name ? name : std::to_string(number);
        }
    }
    if (read_into(proc_path(pid, "stack").c_str(), text, sizeof text) > 0) {
        a.kernel_stack = trimmed(text);
    }
    return a;
}

const char* syscall_name(long number) noexcept {
    switch (number) {
        case SYS_read:
            return "read";
        case SYS_write:
            return "write";
        case SYS_readv:
            return "readv";
        case SYS_writev:
            return "writev";
        case SYS_openat:
            return "openat";
        case SYS_futex:
            return "futex";
        case SYS_ppoll:
            return "ppoll";
        case SYS_pselect6:
            return "pselect6";
        case SYS_epoll_pwait:
            return "epoll_pwait";
        case SYS_nanosleep:
            return "nanosleep";
        case SYS_clock_nanosleep:
            return "clock_nanosleep";
        case SYS_wait4:
            return "wait4";
        case SYS_waitid:
            return "waitid";
        case SYS_recvfrom:
            return "recvfrom";
        case SYS_recvmsg:
            return "recvmsg";
        case SYS_sendto:
            return "sendto";
        case SYS_sendmsg:
            return "sendmsg";
        case SYS_connect:
            return "connect";
        case SYS_accept4:
            return "accept4";
        case SYS_flock:
            return "flock";
        case SYS_fcntl:
            return "fcntl";
        case SYS_ioctl:
            return "ioctl";
        case SYS_rt_sigtimedwait:
            return "rt_sigtimedwait";
        case SYS_rt_sigsuspend:
            return "rt_sigsuspend";
#if defined(SYS_pause)
        case SYS_pause:
            return "pause";
#endif
#if defined(SYS_poll)
        case SYS_poll:
            return "poll";
#endif
#if defined(SYS_select)
        case SYS_select:
            return "select";
#endif
#if defined(SYS_epoll_wait)
        case SYS_epoll_wait:
            return "epoll_wait";
#endif
#if defined(SYS_accept)
        case SYS_accept:
            return "accept";
#endif
        default:
            return "";
    }
}

}  // namespace torchpool::posix
