#include "limits.hpp"

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <mutex>
#include <system_error>

#include <sys/resource.h>

namespace torchpool::posix {

namespace {

std::mutex limit_mutex;
std::uint64_t reserved = 0;                   // guarded by limit_mutex
std::atomic<std::uint64_t> original_soft{0};  // 0: never raised

std::uint64_t open_now() {
    std::uint64_t n = 0;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        ++n;
    }
    return n;
}

constexpr std::uint64_t slack = 64;  // the host's own files, spawns in progress

}  // namespace

fd_room reserve_fds(std::uint64_t count, const std::string& what) {
    std::lock_guard lock(limit_mutex);
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
        throw std::system_error(errno, std::generic_category(), "getrlimit(RLIMIT_NOFILE)");
    }
    fd_room room{.needed = open_now() + reserved + count + slack,
                 .soft_before = limit.rlim_cur,
                 .soft_after = limit.rlim_cur,
                 .hard = limit.rlim_max};
    if (room.needed > limit.rlim_max) {
        throw std::system_error(
            std::make_error_code(std::errc::too_many_files_open),
            "torchpool: " + what + " needs about " + std::to_string(room.needed) +
                " open files (with what this process has open and what it reserved before), "
                "but this process may open at most " +
                std::to_string(limit.rlim_max) +
                " (the hard limit RLIMIT_NOFILE). Raise it before starting the program: "
                "`ulimit -Hn 65536` in its shell (as root), LimitNOFILE=65536 in its systemd "
                "unit, `--ulimit nofile=65536:65536` for docker run, or a nofile line in "
                "/etc/security/limits.conf; or use fewer workers");
    }
    if (room.needed > limit.rlim_cur) {
        rlimit raised = limit;
        raised.rlim_cur = std::min<rlim_t>(limit.rlim_max, 2 * room.needed);
        if (::setrlimit(RLIMIT_NOFILE, &raised) != 0) {
            throw std::system_error(errno, std::generic_category(),
                                    "torchpool: cannot raise the soft limit on open "
                                    "files (RLIMIT_NOFILE) from " +
                                        std::to_string(limit.rlim_cur) + " to " +
                                        std::to_string(raised.rlim_cur) + " for " + what);
        }
        std::uint64_t never = 0;
        original_soft.compare_exchange_strong(never, limit.rlim_cur);
        room.soft_after = raised.rlim_cur;
    }
    reserved += count;
    return room;
}

void release_fds(std::uint64_t count) noexcept {
    std::lock_guard lock(limit_mutex);
    reserved -= std::min(reserved, count);
}

std::optional<std::uint64_t> soft_fd_limit_for_children() noexcept {
    const std::uint64_t soft = original_soft.load(std::memory_order_relaxed);
    return soft == 0 ? std::nullopt : std::optional<std::uint64_t>(soft);
}

}  // namespace torchpool::posix
