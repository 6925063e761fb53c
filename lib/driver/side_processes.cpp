#include "side_processes.hpp"

#include "../posix/process.hpp"

#include <algorithm>
#include <vector>

#include <signal.h>

namespace torchpool::detail {

side_processes::~side_processes() {
    std::vector<int> pidfds;
    append_pidfds(pidfds);
    posix::kill_and_reap(pidfds, posix::teardown_limit);  // at once if the pool did it
}

void side_processes::append_pidfds(std::vector<int>& out) {
    for (auto& p : processes_) {
        out.push_back(p->pidfd.native_handle());
    }
}

void side_processes::adopt_helper(int pid, posix::unique_fd pidfd,
                                  const std::shared_ptr<void>& keep) {
    adopt(pid, std::move(pidfd), true, keep);
}

void side_processes::adopt_unwanted(posix::unique_fd pidfd, const std::shared_ptr<void>& keep) {
    posix::send_signal(pidfd.get(), SIGKILL);
    adopt(0, std::move(pidfd), false, keep);
}

void side_processes::adopt(int pid, posix::unique_fd pidfd, bool helper,
                           const std::shared_ptr<void>& keep) {
    processes_.push_back(std::make_unique<process>(executor_, pid, pidfd.release(), helper));
    reap_when_exited(processes_.back().get(), keep);
}

bool side_processes::helpers_running() const {
    return std::any_of(processes_.begin(), processes_.end(),
                       [](const auto& p) { return p->helper; });
}

void side_processes::reap_when_exited(process* p, std::shared_ptr<void> keep) {
    p->pidfd.async_wait(boost::asio::posix::descriptor_base::wait_read,
                        [this, p, keep](boost::system::error_code ec) {
                            if (ec) {
                                return;
                            }
                            const auto status = posix::try_reap(p->pidfd.native_handle());
                            if (!status) {
                                reap_when_exited(p, keep);  // a spurious wake-up
                                return;
                            }
                            const int pid = p->pid;
                            const bool helper = p->helper;
                            std::erase_if(processes_, [&](const auto& o) { return o.get() == p; });
                            if (helper) {
                                on_helper_end_(pid, *status);
                            }
                        });
}

}  // namespace torchpool::detail
