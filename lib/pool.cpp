// The public pool: checks and completes its parameters, then hands every operation to the
// driver (driver/pool_impl), which runs on the pool's executor.
#include "driver/pool_impl.hpp"
#include <torchpool/pool.hpp>

#include <algorithm>
#include <stdexcept>

namespace torchpool {

namespace {

pool_params checked(pool_params params) {
    if (params.worker.executable.empty()) {
        throw std::invalid_argument(
            "torchpool::pool: pool_params::worker::executable is empty; set it to the path of "
            "a worker program");
    }
    if (params.workers == 0) {
        throw std::invalid_argument("torchpool::pool: pool_params::workers must be at least 1");
    }
    if (params.min_workers > params.workers ||
        (params.max_workers > 0 && params.max_workers < params.workers)) {
        throw std::invalid_argument(
            "torchpool::pool: pool_params::min_workers (" + std::to_string(params.min_workers) +
            ") <= workers (" + std::to_string(params.workers) + ") <= max_workers (" +
            std::to_string(params.max_workers) + ") must hold (zero means: equal to workers)");
    }
    if (params.memory.soft_limit_bytes > 0 && params.memory.hard_limit_bytes > 0 &&
        params.memory.soft_limit_bytes >= params.memory.hard_limit_bytes) {
        throw std::invalid_argument(
            "torchpool::pool: pool_params::memory.soft_limit_bytes must be below "
            "hard_limit_bytes (or one of them zero)");
    }
    if (params.faults.choose && !params.faults.enabled) {
        throw std::invalid_argument(
            "torchpool::pool: pool_params::faults.choose is set but faults.enabled is false; "
            "enable fault injection (in tests only) or leave choose empty");
    }
    if (params.queue_limit == 0) {
        throw std::invalid_argument("torchpool::pool: pool_params::queue_limit must be at least 1");
    }
    if (params.max_frame_bytes < 1024) {
        throw std::invalid_argument(
            "torchpool::pool: pool_params::max_frame_bytes must be at least 1024");
    }
    const std::size_t cores = detail::usable_cores();
    const auto per_worker = static_cast<unsigned>(std::max<std::size_t>(1, cores / params.workers));
    if (params.intra_op_threads == 0) {
        params.intra_op_threads = per_worker;
    }
    if (params.inter_op_threads == 0) {
        params.inter_op_threads = per_worker;
    }
    if (params.max_concurrent_starts == 0) {
        params.max_concurrent_starts = std::max<std::size_t>(4, 2 * cores);
    }
    return params;
}

}  // namespace

pool::pool(executor_type ex, pool_params params)
    : executor_(ex),
      impl_(std::make_shared<detail::pool_impl>(std::move(ex), checked(std::move(params)))) {}

pool::~pool() {
    if (impl_) {
        impl_->cancel();
    }
}

pool& pool::operator=(pool&& other) noexcept {
    if (this != &other) {
        cancel();
        executor_ = std::move(other.executor_);
        impl_ = std::move(other.impl_);
    }
    return *this;
}

void pool::cancel() {
    if (impl_) {
        impl_->cancel();
    }
}

pool_health pool::health() const {
    return impl_ ? impl_->health() : pool_health{.reason = "this pool object is empty"};
}

void pool::resize(std::size_t workers) {
    if (impl_) {
        impl_->resize(workers);
    }
}

pool_stats pool::stats() const {
    return impl_ ? impl_->stats() : pool_stats{};
}

void pool::async_run_impl(const std::shared_ptr<detail::pool_impl>& impl, run_handler handler) {
    impl->run(std::move(handler));
}

void pool::async_submit_impl(const std::shared_ptr<detail::pool_impl>& impl,
                             submit_handler&& handler, request&& req) {
    impl->submit(std::move(handler), std::move(req));
}

void pool::async_shutdown_impl(const std::shared_ptr<detail::pool_impl>& impl,
                               run_handler handler) {
    impl->shutdown(std::move(handler));
}

void pool::async_next_event_impl(const std::shared_ptr<detail::pool_impl>& impl,
                                 event_handler&& handler) {
    impl->next_event(std::move(handler));
}

}  // namespace torchpool
