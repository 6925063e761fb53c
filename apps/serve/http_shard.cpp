#include "http_shard.hpp"

#include "session.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <pthread.h>

namespace torchpool::serve {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using clock = connection::clock;

http_shard::http_shard(shared s, std::string thread_name)
    : shared_(s),
      own_(std::in_place, 1),
      executor_(own_->get_executor()),
      deadline_timer_(executor_),
      keep_running_(std::in_place, own_->get_executor()),
      thread_name_(std::move(thread_name)) {
    registry_.on_empty([this] { connections_gone(); });
}

http_shard::http_shard(shared s, asio::any_io_executor ex)
    : shared_(s), executor_(ex), deadline_timer_(executor_) {
    registry_.on_empty([this] { connections_gone(); });
}

http_shard::~http_shard() {
    if (thread_.joinable()) {
        own_->stop();
        thread_.join();
    }
    // The sessions still in the io_context leave the registry as it is destroyed: nothing of
    // the shard's may run then.
    registry_.on_empty(nullptr);
    drained_ = nullptr;
}

void http_shard::start() {
    if (!own_ || thread_.joinable()) {
        return;
    }
    thread_ = std::thread([this] {
        // Named, so that top -H, perf and /proc/PID/task show what each thread costs.
        ::pthread_setname_np(::pthread_self(), thread_name_.c_str());
        own_->run();
    });
}

void http_shard::admit(tcp::socket socket, bool over_limit) {
    // Responses go out at once: with Nagle's algorithm a response written in two segments
    // waits for the client's delayed acknowledgement of the first (up to 40 ms).
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    const auto self = registry_.add(std::move(socket));
    if (!enforcing_) {
        enforcing_ = true;
        asio::co_spawn(executor_, enforce_deadlines(), asio::detached);
    }
    const session_context context{shared_.limits, shared_.app, shared_.metrics,
                                  registry_,      dates_,      stopping_};
    asio::co_spawn(executor_, serve_connection(self, context, over_limit), asio::detached);
}

asio::awaitable<void> http_shard::enforce_deadlines() {
    using namespace std::chrono_literals;
    const auto& limits = shared_.limits;
    const auto shortest = std::min(limits.header_timeout, limits.idle_timeout);
    const auto period = std::clamp<clock::duration>(shortest / 8, 1ms, 250ms);
    while (registry_.size() > 0) {
        deadline_timer_.expires_after(period);
        co_await deadline_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        registry_.cut_overdue(clock::now());
    }
    enforcing_ = false;
}

void http_shard::stop(std::function<void()> drained) {
    if (stopping_) {
        return;
    }
    stopping_ = true;
    drained_ = std::move(drained);
    registry_.cut_waiting();  // their read ends; a busy one closes after its response
    if (registry_.size() == 0) {
        connections_gone();
    }
    // Nothing is left to run once the connections are gone: the thread may end then.
    keep_running_.reset();
}

void http_shard::connections_gone() {
    deadline_timer_.cancel();  // nothing to watch: its loop ends now
    if (stopping_ && drained_) {
        std::exchange(drained_, {})();
    }
}

}  // namespace torchpool::serve
