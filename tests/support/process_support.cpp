#include "process_support.hpp"

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

}  // namespace torchpool::test
