// The public pool: resolves its parameters (driver/params), then hands every operation to
// the driver (driver/pool_impl), which runs on the pool's executor.
#include "driver/params.hpp"
#include "driver/pool_impl.hpp"
#include <torchpool/pool.hpp>

#include <boost/system/system_error.hpp>

#include <algorithm>
#include <stdexcept>

namespace torchpool {

pool::pool(executor_type ex, pool_params params)
    : executor_(ex),
      impl_(std::make_shared<detail::pool_impl>(
          std::move(ex), detail::resolve(std::move(params), detail::usable_cores()))) {}

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

tensor pool::allocate(dtype type, std::vector<std::int64_t> shape) {
    boost::system::error_code ec;
    tensor t = allocate(type, std::move(shape), ec);
    if (ec) {
        throw boost::system::system_error(ec, "torchpool::pool::allocate");
    }
    return t;
}

tensor pool::allocate(dtype type, std::vector<std::int64_t> shape, boost::system::error_code& ec) {
    if (!impl_) {
        ec = errc::invalid_request;
        return {};
    }
    return impl_->allocate(type, std::move(shape), ec);
}

void pool::async_allocate_impl(const std::shared_ptr<detail::pool_impl>& impl,
                               allocate_handler&& handler, dtype type,
                               std::vector<std::int64_t> shape) {
    impl->allocate(std::move(handler), type, std::move(shape));
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
