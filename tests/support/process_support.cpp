#include "process_support.hpp"

#include <cstdio>
#include <fstream>
#include <sstream>

#include <unistd.h>

namespace torchpool::test {

std::vector<int> child_pids() {
    std::vector<int> pids;
    const std::string self = std::to_string(::getpid());
    std::ifstream file("/proc/self/task/" + self + "/children");
    int pid = 0;
    while (file >> pid) {
        pids.push_back(pid);
    }
    // Children of other threads of this process are listed under their own task ids.
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
        if (task.path().filename() == self) {
            continue;
        }
        std::ifstream more(task.path() / "children");
        while (more >> pid) {
            pids.push_back(pid);
        }
    }
    return pids;
}

std::optional<proc_stat> read_proc_stat(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses; it ends at the last ')'.
    const auto close = stat.rfind(')');
    proc_stat out;
    if (close == std::string::npos ||
        std::sscanf(stat.c_str() + close + 1, " %c %d", &out.state, &out.ppid) != 2) {
        return std::nullopt;
    }
    return out;
}

std::vector<int> zombie_children() {
    std::vector<int> zombies;
    for (const int pid : child_pids()) {
        if (const auto stat = read_proc_stat(pid); stat && stat->state == 'Z') {
            zombies.push_back(pid);
        }
    }
    return zombies;
}

}  // namespace torchpool::test
