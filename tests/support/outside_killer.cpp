#include "outside_killer.hpp"

#include "process_support.hpp"

#include <algorithm>
#include <random>
#include <string>

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace torchpool::test {

namespace {

// SIGKILLs `pid` if it is still our child. The pidfd pins the process it was opened for:
// if the pid was reused after that, the signal goes to the (dead) original, harmlessly.
bool kill_if_child(int pid) {
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) {
        return false;
    }
    bool killed = false;
    if (const auto stat = read_proc_stat(pid); stat && stat->ppid == ::getpid()) {
        killed = ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0) == 0;
    }
    ::close(pidfd);
    return killed;
}

}  // namespace

outside_killer::outside_killer(std::chrono::microseconds min_pause,
                               std::chrono::microseconds max_pause, unsigned seed)
    : min_pause_(min_pause), max_pause_(max_pause), seed_(seed) {}

void outside_killer::observe(const worker_event& e) {
    std::lock_guard lock(mutex_);
    if (e.what == worker_event::kind::started) {
        pids_.push_back(e.pid);
    } else if (e.what == worker_event::kind::exited) {
        std::erase(pids_, e.pid);
        std::erase(killed_, e.pid);
    }
}

bool outside_killer::all_exits_seen() {
    std::lock_guard lock(mutex_);
    return killed_.empty();
}

std::size_t outside_killer::kill_now(std::size_t n) {
    std::mt19937 random(seed_ + 1);
    std::size_t killed = 0;
    for (std::size_t i = 0; i < n; ++i) {
        if (const int victim = pick(random); victim > 0 && kill_if_child(victim)) {
            ++killed;
            ++kills_;
        }
    }
    return killed;
}

void outside_killer::start() {
    thread_ = std::thread([this] { run(); });
}

void outside_killer::stop() {
    stop_ = true;
    if (thread_.joinable()) {
        thread_.join();
    }
}

int outside_killer::pick(std::mt19937& random) {
    std::lock_guard lock(mutex_);
    if (pids_.empty()) {
        return 0;
    }
    const auto i = std::uniform_int_distribution<std::size_t>(0, pids_.size() - 1)(random);
    const int pid = pids_[i];
    pids_.erase(pids_.begin() + static_cast<std::ptrdiff_t>(i));  // killed at most once
    // Counted as killed before the signal, so that its exit cannot be reported first; a
    // pid that is no longer our child has exited already, which the pool reports too.
    killed_.push_back(pid);
    return pid;
}

void outside_killer::run() {
    std::mt19937 random(seed_);
    std::uniform_int_distribution<long> pause(min_pause_.count(), max_pause_.count());
    while (!stop_) {
        if (const int victim = pick(random); victim > 0 && kill_if_child(victim)) {
            ++kills_;
        }
        // The pace of the kills, not a synchronization.
        std::this_thread::sleep_for(std::chrono::microseconds(pause(random)));
    }
}

}  // namespace torchpool::test
