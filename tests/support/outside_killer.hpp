// Kills random worker processes from outside the pool, as an OOM killer, an operator or a
// crashing library would: a thread of its own SIGKILLs one of the pids it was told about,
// every few milliseconds, while the pool runs. A pid is signalled only while it is still a
// child of this process (checked through a pidfd), so a pid the system has reused for an
// unrelated process is never hit.
#pragma once

#include <torchpool/events.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

namespace torchpool::test {

class outside_killer {
public:
    /// Kills every `min_pause` to `max_pause` (uniformly), with a fixed seed.
    outside_killer(std::chrono::microseconds min_pause, std::chrono::microseconds max_pause,
                   unsigned seed = 42);
    ~outside_killer() { stop(); }
    outside_killer(const outside_killer&) = delete;
    outside_killer& operator=(const outside_killer&) = delete;

    /// Feed it the pool's events (from the pool's executor): started adds a victim, exited
    /// removes one. Fork-server events are ignored: only workers are killed.
    void observe(const worker_event& e);
    /// Sets the pause between kills (before start()).
    void set_pace(std::chrono::microseconds min_pause, std::chrono::microseconds max_pause) {
        min_pause_ = min_pause;
        max_pause_ = max_pause;
    }
    /// Kills up to `n` of its victims now, from the calling thread; returns how many.
    std::size_t kill_now(std::size_t n);
    void start();
    /// Stops killing; returns once the thread has ended. Idempotent.
    void stop();
    /// Workers it killed (the signal was delivered).
    std::size_t kills() const noexcept { return kills_.load(); }
    /// True once the pool has reported the exit of every worker killed so far (the
    /// pool learns of a kill a moment after it happens).
    bool all_exits_seen();

private:
    void run();
    int pick(std::mt19937& random);

    std::chrono::microseconds min_pause_;
    std::chrono::microseconds max_pause_;
    unsigned seed_;
    std::mutex mutex_;
    std::vector<int> pids_;    // started, not killed, not exited
    std::vector<int> killed_;  // killed, exit not reported yet
    std::atomic<bool> stop_{false};
    std::atomic<std::size_t> kills_{0};
    std::thread thread_;
};

}  // namespace torchpool::test
