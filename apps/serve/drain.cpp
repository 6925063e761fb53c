#include "drain.hpp"

#include <csignal>
#include <cstdio>

namespace torchpool::serve {

drain::drain(boost::asio::any_io_executor ex, listener& http, std::vector<served_model>& models,
             std::chrono::milliseconds timeout)
    : http_(http),
      models_(models),
      timeout_(timeout),
      signals_(ex, SIGINT, SIGTERM),
      limit_(ex),
      pools_running_(models.size()) {}

void drain::on_signals() {
    signals_.async_wait([this](boost::system::error_code ec, int signo) {
        if (!ec) {
            start(signo == SIGTERM ? "SIGTERM" : "SIGINT");
        }
    });
}

void drain::start(const char* why) {
    if (std::exchange(started_, true)) {
        return;
    }
    std::printf("%s: draining: no new connections; requests in flight are answered\n", why);
    std::fflush(stdout);
    // Nothing waits in a batch once every connection is done: the flush below, at the drain's
    // start, sent what waited then.
    http_.when_drained([this] {
        for (auto& m : models_) {
            m.workers->async_shutdown([this](boost::system::error_code) { pools_stopped(); });
        }
    });
    http_.stop();
    for (auto& m : models_) {
        m.batches->flush_all();
    }
    limit_.expires_after(timeout_);
    limit_.async_wait([this](boost::system::error_code ec) {
        if (!ec) {
            timed_out();
        }
    });
}

void drain::pools_stopped() {
    if (--pools_running_ == 0) {
        limit_.cancel();
        signals_.cancel();
    }
}

void drain::timed_out() {
    std::fprintf(stderr,
                 "torchpool-serve: the drain took longer than --drain-timeout-ms (%lld); closing "
                 "what is left\n",
                 static_cast<long long>(timeout_.count()));
    http_.close_all();
    for (auto& m : models_) {
        m.workers->cancel();
    }
}

}  // namespace torchpool::serve
