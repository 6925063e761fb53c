// The drain, on SIGTERM (or SIGINT): readiness turns 503 and no connection is accepted; idle
// connections close; requests already sent are answered (waiting batches go at once) and their
// connections closed; then the pools stop. Past the drain timeout whatever is left is cut.
#pragma once

#include "listener.hpp"
#include "served_model.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstddef>
#include <vector>

namespace torchpool::serve {

class drain {
public:
    drain(boost::asio::any_io_executor ex, listener& http, std::vector<served_model>& models,
          std::chrono::milliseconds timeout);

    /// Waits for SIGTERM or SIGINT, then drains. The only signal handler the server installs.
    void on_signals();
    /// Drains now; `why` is said in the log.
    void start(const char* why);

private:
    void pools_stopped();
    void timed_out();

    listener& http_;
    std::vector<served_model>& models_;
    std::chrono::milliseconds timeout_;
    boost::asio::signal_set signals_;
    boost::asio::steady_timer limit_;
    std::size_t pools_running_ = 0;
    bool started_ = false;
};

}  // namespace torchpool::serve
