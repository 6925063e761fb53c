#include "cgroup.hpp"

#include "proc.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace torchpool::posix {

namespace {

bool write_file(const std::string& path, const std::string& text, int& error) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        error = errno;
        return false;
    }
    const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    error = ok ? 0 : errno;
    ::close(fd);
    return ok;
}

// The host's own cgroup path in hierarchy `controller` ("memory" for v1, "" for v2's
// unified one), from /proc/self/cgroup.
std::optional<std::string> own_path(const std::string& controller) {
    std::istringstream in(read_small_file("/proc/self/cgroup").value_or(""));
    for (std::string line; std::getline(in, line);) {
        const auto first = line.find(':');
        const auto second = line.find(':', first + 1);
        if (first == std::string::npos || second == std::string::npos) {
            continue;
        }
        std::istringstream names(line.substr(first + 1, second - first - 1));
        const std::string path = line.substr(second + 1);
        if (controller.empty()) {
            if (line.compare(0, 3, "0::") == 0) {
                return path;
            }
            continue;
        }
        for (std::string name; std::getline(names, name, ',');) {
            if (name == controller) {
                return path;
            }
        }
    }
    return std::nullopt;
}

bool exists(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
}

std::atomic<unsigned> pools_made{0};

}  // namespace

memory_cgroups::memory_cgroups(version v, std::string root, std::size_t slots)
    : version_(v), root_(std::move(root)), slots_(slots) {}

memory_cgroups::memory_cgroups(memory_cgroups&& other) noexcept
    : version_(other.version_), root_(std::move(other.root_)), slots_(other.slots_) {
    other.root_.clear();
}

memory_cgroups::~memory_cgroups() {
    if (root_.empty()) {
        return;
    }
    for (std::size_t s = 0; s < slots_; ++s) {
        ::rmdir(slot_dir(s).c_str());
    }
    ::rmdir(root_.c_str());
}

std::string memory_cgroups::slot_dir(std::size_t slot) const {
    return root_ + "/slot-" + std::to_string(slot);
}

std::string memory_cgroups::describe() const {
    return std::string(version_ == version::v2 ? "cgroup v2" : "cgroup v1") + " at " + root_;
}

std::optional<memory_cgroups> memory_cgroups::create(std::size_t slots, std::uint64_t limit_bytes,
                                                     std::string& why) {
    // v2 first: the unified hierarchy, with the memory controller available to our cgroup.
    version v;
    std::string parent;
    const auto v2_path = own_path("");
    const std::string v2_mount =
        exists("/sys/fs/cgroup/cgroup.controllers") ? "/sys/fs/cgroup" : "/sys/fs/cgroup/unified";
    const auto v2_controllers =
        read_small_file(v2_mount + (v2_path ? *v2_path : "") + "/cgroup.subtree_control");
    if (v2_path && v2_controllers && v2_controllers->find("memory") != std::string::npos) {
        v = version::v2;
        parent = v2_mount + *v2_path;
    } else if (const auto v1_path = own_path("memory");
               v1_path && exists("/sys/fs/cgroup/memory/cgroup.procs")) {
        v = version::v1;
        parent = "/sys/fs/cgroup/memory" + *v1_path;
    } else {
        why =
            "no memory cgroup can be made here: cgroup v2 does not delegate the memory "
            "controller to this process's cgroup, and there is no cgroup v1 memory "
            "hierarchy";
        return std::nullopt;
    }
    while (!parent.empty() && parent.back() == '/') {
        parent.pop_back();
    }
    const std::string root = parent + "/torchpool-" + std::to_string(::getpid()) + "-" +
                             std::to_string(pools_made.fetch_add(1));
    if (::mkdir(root.c_str(), 0755) != 0) {
        why = "cannot make the memory cgroup " + root + ": " + std::strerror(errno);
        return std::nullopt;
    }
    memory_cgroups made(v, root, 0);
    int error = 0;
    if (v == version::v2 && !write_file(root + "/cgroup.subtree_control", "+memory", error)) {
        why = "cannot enable the memory controller in " + root + ": " + std::strerror(error);
        return std::nullopt;
    }
    const char* limit_file = v == version::v2 ? "/memory.max" : "/memory.limit_in_bytes";
    for (std::size_t s = 0; s < slots; ++s) {
        const std::string dir = made.slot_dir(s);
        if (::mkdir(dir.c_str(), 0755) != 0) {
            why = "cannot make the memory cgroup " + dir + ": " + std::strerror(errno);
            return std::nullopt;
        }
        made.slots_ = s + 1;
        if (!write_file(dir + limit_file, std::to_string(limit_bytes), error)) {
            why = "cannot set the memory limit of " + dir + ": " + std::strerror(error);
            return std::nullopt;
        }
        // Without swap, a worker over its limit is killed rather than slowed to a crawl
        // (best effort: a host without swap accounting has no such file).
        write_file(dir + (v == version::v2 ? "/memory.swap.max" : "/memory.memsw.limit_in_bytes"),
                   v == version::v2 ? "0" : std::to_string(limit_bytes), error);
    }
    return made;
}

bool memory_cgroups::enter(std::size_t slot, int pid) const {
    int error = 0;
    return write_file(slot_dir(slot) + "/cgroup.procs", std::to_string(pid), error);
}

std::optional<std::uint64_t> memory_cgroups::oom_kills(std::size_t slot) const {
    const auto text = read_small_file(
        slot_dir(slot) + (version_ == version::v2 ? "/memory.events" : "/memory.oom_control"));
    if (!text) {
        return std::nullopt;
    }
    return count_after(text->c_str(), "oom_kill ");
}

}  // namespace torchpool::posix
