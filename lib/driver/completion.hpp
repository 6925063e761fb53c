// Completion plumbing of the pool's public operations: work runs on the pool's executor
// (inline when the caller is already there, which saves a trip through the scheduler per
// task), and a handler completes on its own executor, never inside the initiating call.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <memory>
#include <utility>

namespace torchpool::detail {

class completion_context {
public:
    explicit completion_context(boost::asio::any_io_executor ex) : executor_(std::move(ex)) {}

    const boost::asio::any_io_executor& executor() const noexcept { return executor_; }

    // True if the caller runs on the pool's executor (a plain io_context executor; a
    // strand's ownership cannot be asked).
    bool running_on_pool_executor() const noexcept {
        const auto* ex = executor_.target<boost::asio::io_context::executor_type>();
        return ex && ex->running_in_this_thread();
    }

    // Runs `f` now, marked as part of a public operation's own call: what completes inside
    // it is posted (complete).
    template <class F>
    void as_initiation(F&& f) {
        const bool outer = std::exchange(initiating_, true);
        f();
        initiating_ = outer;
    }

    // Runs `f` now if the caller is on the pool's executor, else posts it there.
    template <class F>
    void on_pool_executor(F&& f) {
        if (running_on_pool_executor()) {
            as_initiation(f);
        } else {
            boost::asio::post(executor_, std::forward<F>(f));
        }
    }

    // Runs a completion on the handler's own executor, tracking work there until then. A
    // response travels as a shared_ptr until the handler is called.
    template <class Handler, class... Args>
    void complete(Handler handler, Args&&... args) {
        namespace asio = boost::asio;
        auto slot = asio::get_associated_cancellation_slot(handler);
        if (slot.is_connected()) {
            slot.clear();
        }
        const auto associated = asio::get_associated_executor(handler, executor_);
        if (!initiating_ && is_pool_executor_here(associated)) {
            // What dispatch would do, without its type-erased detour: the handler's executor
            // is the pool's own io_context, and we are running on it.
            std::move(handler)(unwrap(std::forward<Args>(args))...);
            return;
        }
        auto ex = asio::prefer(associated, asio::execution::outstanding_work.tracked);
        auto call = [h = std::move(handler), ... a = std::forward<Args>(args)]() mutable {
            std::move(h)(unwrap(std::move(a))...);
        };
        if (initiating_) {
            // Never complete inside the initiating call: go round the pool's executor first.
            asio::post(executor_, [ex, call = std::move(call)]() mutable {
                asio::dispatch(ex, std::move(call));
            });
        } else {
            asio::dispatch(ex, std::move(call));
        }
    }

private:
    template <class T>
    static T&& unwrap(T&& value) {
        return std::forward<T>(value);
    }
    template <class T>
    static T&& unwrap(std::shared_ptr<T>&& value) {
        return std::move(*value);
    }

    // True if `ex` is (an any_io_executor holding) the pool's io_context executor, and this
    // thread is running that io_context.
    template <class Executor>
    bool is_pool_executor_here(const Executor& ex) const noexcept {
        using io_executor = boost::asio::io_context::executor_type;
        if (!running_on_pool_executor()) {
            return false;
        }
        const auto* pool_ex = executor_.target<io_executor>();
        const auto* io_ex = ex.template target<io_executor>();
        if (!io_ex) {
            if (const auto* any = ex.template target<boost::asio::any_io_executor>()) {
                io_ex = any->template target<io_executor>();
            }
        }
        return io_ex && *io_ex == *pool_ex;
    }

    boost::asio::any_io_executor executor_;
    bool initiating_ = false;  // inside a public operation's own call
};

}  // namespace torchpool::detail
