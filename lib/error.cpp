#include <torchpool/error.hpp>

#include <boost/asio/error.hpp>

#include <string>

namespace torchpool {

namespace {

class category final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "torchpool"; }

    std::string message(int ev) const override {
        switch (static_cast<errc>(ev)) {
            case errc::overloaded:
                return "the pool's queue is full; the task was not run";
            case errc::worker_died:
                return "the worker running the task died";
            case errc::timeout:
                return "the task passed its deadline";
            case errc::task_failed:
                return "the worker's handler reported an error";
            case errc::protocol_error:
                return "the worker broke the wire protocol and was killed";
            case errc::spawn_failed:
                return "workers cannot be started";
            case errc::shutting_down:
                return "the pool is shutting down and admits no new task";
            case errc::invalid_request:
                return "the request is invalid";
            case errc::frame_too_large:
                return "a message is larger than the configured limit";
            case errc::frame_malformed:
                return "a message is not a valid Cap'n Proto message of the torchpool schema";
            case errc::frame_truncated:
                return "the stream ended in the middle of a message";
            case errc::memory_limit:
                return "the worker running the task went over its memory limit";
            case errc::poison_task:
                return "the task made its workers fail repeatedly and will not be run again";
            case errc::shared_memory_full:
                return "the pool's input memory is full now";
        }
        return "unknown torchpool error " + std::to_string(ev);
    }

    bool equivalent(const boost::system::error_code& code, int cond) const noexcept override {
        if (code.category() != *this) {
            return false;
        }
        const auto e = static_cast<errc>(code.value());
        switch (static_cast<condition>(cond)) {
            case condition::worker_failure:
                return e == errc::worker_died || e == errc::timeout || e == errc::protocol_error ||
                       e == errc::memory_limit;
            case condition::retryable:
                return e == errc::overloaded || e == errc::worker_died || e == errc::spawn_failed ||
                       e == errc::protocol_error || e == errc::shared_memory_full;
            case condition::overload:
                return e == errc::overloaded || e == errc::spawn_failed ||
                       e == errc::shutting_down || e == errc::shared_memory_full;
        }
        return false;
    }
};

class condition_category_impl final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "torchpool.condition"; }

    std::string message(int ev) const override {
        switch (static_cast<condition>(ev)) {
            case condition::worker_failure:
                return "the worker failed the task";
            case condition::retryable:
                return "the task may succeed if submitted again";
            case condition::overload:
                return "the pool refused work for lack of capacity";
        }
        return "unknown torchpool condition " + std::to_string(ev);
    }

    bool equivalent(const boost::system::error_code& code, int cond) const noexcept override {
        return torchpool::error_category().equivalent(code, cond);
    }
};

}  // namespace

const boost::system::error_category& error_category() noexcept {
    static const category instance;
    return instance;
}

const boost::system::error_category& condition_category() noexcept {
    static const condition_category_impl instance;
    return instance;
}

}  // namespace torchpool
