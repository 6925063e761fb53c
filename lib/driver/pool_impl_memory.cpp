// The pool's side of the data plane (see pool_impl.hpp): its input memory (made at
// construction, handed out by allocate and async_allocate, whose waits a freed block wakes),
// each worker's output memory (adopted at its hello, released block by block, orphaned at its
// exit), and the figures stats and health show of both.
#include "pool_impl.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <limits>
#include <stdexcept>

namespace torchpool::detail {

namespace asio = boost::asio;
using boost::system::error_code;

std::optional<std::uint64_t> pool_impl::fits(dtype type,
                                             const std::vector<std::int64_t>& shape) const {
    std::uint64_t bytes = element_size(type);
    for (const auto d : shape) {
        if (d < 0 || (d > 0 && bytes > std::numeric_limits<std::uint64_t>::max() /
                                           static_cast<std::uint64_t>(d))) {
            return std::nullopt;
        }
        bytes *= static_cast<std::uint64_t>(d);
    }
    if (!inputs_ || bytes > inputs_->memory().size()) {
        return std::nullopt;
    }
    return bytes;
}

tensor pool_impl::allocate(dtype type, std::vector<std::int64_t> shape, error_code& ec) {
    ec = {};
    const auto bytes = fits(type, shape);
    if (!bytes) {
        ec = errc::invalid_request;
        return {};
    }
    auto block = inputs_->allocate(*bytes);
    if (!block) {
        ec = errc::shared_memory_full;
        return {};
    }
    return {type, std::move(shape), block->bytes(block)};
}

void pool_impl::allocate(allocate_handler&& handler, dtype type, std::vector<std::int64_t> shape) {
    const std::uint64_t id = next_allocation_.fetch_add(1, std::memory_order_relaxed);
    // Connected here, in the caller's context, as for submit; the cancel is posted.
    auto slot = asio::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) {
        slot.assign(
            [weak = weak_from_this(), ex = completion_.executor(), id](asio::cancellation_type) {
                asio::post(ex, [weak, id] {
                    auto self = weak.lock();
                    if (!self) {
                        return;
                    }
                    auto& waits = self->allocations_;
                    auto it = std::find_if(waits.begin(), waits.end(),
                                           [id](const auto& w) { return w.id == id; });
                    if (it != waits.end()) {
                        auto h = std::move(it->handler);
                        waits.erase(it);
                        self->completion_.complete(
                            std::move(h), error_code(asio::error::operation_aborted), tensor());
                    }
                });
            });
    }
    completion_.on_pool_executor(
        [self = shared_from_this(),
         wait = waiting_allocation{id, std::move(handler), type, std::move(shape)}]() mutable {
            self->do_allocate(std::move(wait));
        });
}

void pool_impl::do_allocate(waiting_allocation&& wait) {
    if (allocations_.empty()) {
        error_code ec;
        tensor t = allocate(wait.type, wait.shape, ec);
        if (ec != errc::shared_memory_full) {
            completion_.complete(std::move(wait.handler), ec, std::move(t));
            return;
        }
    } else if (!fits(wait.type, wait.shape)) {
        // Others wait first (in order), but one that can never fit is refused at once.
        completion_.complete(std::move(wait.handler), error_code(errc::invalid_request), tensor());
        return;
    }
    allocations_.push_back(std::move(wait));
    if (!std::exchange(allocations_wait_, true)) {
        inputs_->on_free([weak = weak_from_this(), ex = completion_.executor()] {
            asio::post(ex, [weak] {
                if (auto self = weak.lock()) {
                    self->serve_waiting_allocations();
                }
            });
        });
    }
}

void pool_impl::serve_waiting_allocations() {
    while (!allocations_.empty()) {
        auto& next = allocations_.front();
        error_code ec;
        tensor t = allocate(next.type, next.shape, ec);
        if (ec == errc::shared_memory_full) {
            return;  // the next block freed tries again
        }
        auto h = std::move(next.handler);
        allocations_.pop_front();
        completion_.complete(std::move(h), ec, std::move(t));
    }
    if (std::exchange(allocations_wait_, false)) {
        inputs_->on_free(nullptr);
    }
}

void pool_impl::end_waiting_allocations(error_code ec) {
    while (!allocations_.empty()) {
        auto h = std::move(allocations_.front().handler);
        allocations_.pop_front();
        completion_.complete(std::move(h), ec, tensor());
    }
    if (inputs_ && std::exchange(allocations_wait_, false)) {
        inputs_->on_free(nullptr);
    }
}

pool_health pool_impl::health() const {
    pool_health h = health_.read();
    if (inputs_) {
        h.input_memory_bytes = inputs_->memory().size();
        h.input_memory_used = inputs_->usage().used();
    }
    h.output_memory_held = outputs_held_->load(std::memory_order_relaxed);
    return h;
}

pool_stats pool_impl::stats() const {
    pool_stats s = core_.stats();
    s.open_files_limit = fds_.room().soft_after;
    s.events_dropped = events_.dropped();
    if (inputs_) {
        s.input_memory_bytes = inputs_->memory().size();
        s.input_memory_used = inputs_->usage().used();
        s.input_memory_peak = inputs_->usage().peak();
    }
    s.output_memory_held = outputs_held_->load(std::memory_order_relaxed);
    s.tensors_inline = tensors_inline_.load(std::memory_order_relaxed);
    s.tensors_shared = tensors_shared_.load(std::memory_order_relaxed);
    s.input_memory_full = input_memory_full_.load(std::memory_order_relaxed);
    return s;
}

bool pool_impl::adopt_outputs(core::slot_id s, const wire::hello_msg& hello) {
    const bool has_outputs = std::find(hello.capabilities.begin(), hello.capabilities.end(),
                                       wire::uses_shared_memory) != hello.capabilities.end();
    if (!has_outputs || !inputs_) {
        return true;  // its results come inline
    }
    if (outputs_[s] || workers_[s]->descriptors_waiting() != 1) {
        core_.on_protocol_error(s, core::output_memory_missing(), core::clock::now());
        return false;
    }
    auto adopted = worker_outputs::adopt(
        workers_[s]->take_descriptor(), params_.shared_memory.worker_output_bytes, outputs_held_,
        [weak = weak_from_this(), ex = completion_.executor(), s](worker_outputs& outputs) {
            asio::post(ex, [weak, s, released = outputs.weak_from_this()] {
                auto self = weak.lock();
                auto memory = released.lock();
                if (self && memory) {
                    self->send_releases(s, memory);
                }
            });
        });
    if (auto* why = std::get_if<std::string>(&adopted)) {
        core_.on_protocol_error(s, std::move(*why), core::clock::now());
        return false;
    }
    outputs_[s] = std::move(std::get<std::shared_ptr<worker_outputs>>(adopted));
    return true;
}

void pool_impl::send_releases(core::slot_id s, const std::shared_ptr<worker_outputs>& outputs) {
    auto offsets = outputs->take_released();
    if (outputs_[s] == outputs && !offsets.empty() && workers_[s]->alive()) {
        workers_[s]->send(share_frame(wire::encode(wire::release_msg{std::move(offsets)})));
    }
}

void pool_impl::forget_outputs(core::slot_id s) {
    if (outputs_[s]) {
        outputs_[s]->orphan();
        outputs_[s].reset();
    }
}

}  // namespace torchpool::detail
