// Where the pool posts its health for readers on any thread (readiness probes, signal
// threads): a few atomics the pool's executor writes after every event, and the verdict
// with its reason computed on read. Relaxed: each figure is a snapshot on its own, and a
// probe needs no consistency between them.
#pragma once

#include "../core/pool_core.hpp"
#include <torchpool/health.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <string>

namespace torchpool::detail {

class health_board {
public:
    health_board(std::size_t workers, std::size_t min_ready)
        : workers_(workers), min_ready_(std::max<std::size_t>(1, min_ready)) {}

    /// On the pool's executor, after every event.
    void post(const core::pool_core::health_inputs& h) noexcept {
        live_.store(h.running, std::memory_order_relaxed);
        admitting_.store(h.admitting, std::memory_order_relaxed);
        degraded_.store(h.degraded, std::memory_order_relaxed);
        ready_workers_.store(h.ready_workers, std::memory_order_relaxed);
    }

    /// From any thread.
    pool_health read() const {
        pool_health h{.live = live_.load(std::memory_order_relaxed),
                      .degraded = degraded_.load(std::memory_order_relaxed),
                      .draining = !admitting_.load(std::memory_order_relaxed),
                      .ready_workers = ready_workers_.load(std::memory_order_relaxed),
                      .workers = workers_};
        if (!h.live) {
            h.reason = "the pool is not running (async_run has not started it, or it has finished)";
        } else if (h.draining) {
            h.reason = "the pool is shutting down";
        } else if (h.degraded) {
            h.reason = "workers cannot be started (the pool is degraded)";
        } else if (h.ready_workers < min_ready_) {
            h.reason = std::to_string(h.ready_workers) + " of " + std::to_string(workers_) +
                       " workers are ready; " + std::to_string(min_ready_) +
                       " are needed (pool_params::min_ready_workers)";
        } else {
            h.ready = true;
        }
        return h;
    }

private:
    std::size_t workers_;
    std::size_t min_ready_;
    std::atomic<bool> live_{false};
    std::atomic<bool> admitting_{true};
    std::atomic<bool> degraded_{false};
    std::atomic<std::size_t> ready_workers_{0};
};

}  // namespace torchpool::detail
