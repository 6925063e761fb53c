// What the pool holds of one supervised process, worker or fork server: its pidfd (the one
// reaper waits on it, never blocking) and its stdout+stderr pipe, read as it comes. Its exit
// is told only once the output read in flight has run, so that the last lines are there.
// It takes its descriptors as they are, and reaps and signals through `process_ops`, so that
// tests drive it with pipes and a scripted reaper (tests/unit/driver/process_io_test.cpp).
#pragma once

#include "../core/types.hpp"
#include "../posix/process.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <array>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include <unistd.h>

namespace torchpool::detail {

/// How a process is reaped and signalled through its pidfd: the system's calls in the pool.
struct process_ops {
    /// Its exit status if it has exited (reaping it), else nullopt (a spurious wake-up).
    std::optional<core::exit_status> (*try_reap)(int pidfd) = posix::try_reap;
    bool (*send_signal)(int pidfd, int signo) noexcept = posix::send_signal;
    /// Exited, whether reaped or not.
    bool (*has_exited)(int pidfd) = posix::has_exited;
};

class process_io {
public:
    explicit process_io(const boost::asio::any_io_executor& ex, process_ops ops = {})
        : ops_(ops), pidfd_(ex), log_(ex) {}

    // A new process in this place: its pidfd and output pipe.
    void take(posix::spawned_process& p) { take(p.pidfd.release(), p.log.release()); }
    // The same from bare descriptors, which it owns from now on: `pidfd` becomes readable
    // when the process exits, `log` is the read end of its output.
    void take(int pidfd, int log) {
        ++generation_;
        alive_ = true;
        exit_.reset();
        pidfd_.assign(pidfd);
        log_.assign(log);
    }

    // The process is gone: its completions still queued find another generation.
    void retire() {
        exit_.reset();
        alive_ = false;
        ++generation_;
        boost::system::error_code ignored;
        log_.close(ignored);
        pidfd_.close(ignored);
    }

    bool alive() const noexcept { return alive_; }
    std::uint64_t generation() const noexcept { return generation_; }
    // Reaped, its exit waiting for reads in flight.
    const std::optional<core::exit_status>& exit() const noexcept { return exit_; }
    bool reading_output() const noexcept { return log_reading_; }

    void signal(int signo) {
        if (alive_) {
            ops_.send_signal(pidfd_.native_handle(), signo);
        }
    }
    // Exited, whether reaped or not.
    bool has_exited() { return alive_ && ops_.has_exited(pidfd_.native_handle()); }
    // Only for destructors (posix::kill_and_reap): no process may outlive the pool.
    int pidfd_if_alive() { return alive_ ? pidfd_.native_handle() : -1; }

    // Waits for the process to exit and reaps it (a spurious wake-up waits again); then,
    // with exit() set and the output read in flight cancelled, calls `exited()`.
    template <class Exited>
    void watch_exit(std::shared_ptr<void> keep, Exited exited) {
        pidfd_.async_wait(boost::asio::posix::descriptor_base::wait_read,
                          [this, keep = std::move(keep), gen = generation_,
                           exited](boost::system::error_code ec) mutable {
                              if (ec || generation_ != gen || !alive_) {
                                  return;
                              }
                              auto status = ops_.try_reap(pidfd_.native_handle());
                              if (!status) {
                                  watch_exit(std::move(keep), std::move(exited));
                                  return;
                              }
                              // A log read may hold bytes whose handler has not run: it runs first
                              // (cancelled), the rest is drained after it.
                              exit_ = *status;
                              if (log_reading_) {
                                  boost::system::error_code ignored;
                                  log_.cancel(ignored);
                              }
                              exited();
                          });
    }

    // Reads the output into `sink` until the pipe ends or the process has exited; after
    // each read, `after()` (which completes an exit once nothing is in flight).
    template <class Sink, class After>
    void read_output(std::shared_ptr<void> keep, Sink sink, After after) {
        log_reading_ = true;
        log_.async_read_some(boost::asio::buffer(buffer_),
                             [this, keep = std::move(keep), gen = generation_, sink, after](
                                 boost::system::error_code ec, std::size_t n) mutable {
                                 if (generation_ != gen) {
                                     return;
                                 }
                                 log_reading_ = false;
                                 if (n > 0) {
                                     sink(std::string_view(buffer_.data(), n));
                                 }
                                 if (!ec && !exit_) {
                                     read_output(std::move(keep), sink, after);
                                 } else if (ec && ec != boost::asio::error::operation_aborted) {
                                     boost::system::error_code ignored;
                                     log_.close(ignored);  // end of its output
                                 }
                                 after();
                             });
    }

    // At exit only, with no read in flight: what the pipe still holds, without blocking.
    template <class Sink>
    void drain_output(Sink&& sink) {
        if (!log_.is_open()) {
            return;
        }
        for (;;) {
            const ssize_t n = ::read(log_.native_handle(), buffer_.data(), buffer_.size());
            if (n > 0) {
                sink(std::string_view(buffer_.data(), static_cast<std::size_t>(n)));
            } else if (n == 0 || errno != EINTR) {
                return;
            }
        }
    }

private:
    process_ops ops_;
    std::uint64_t generation_ = 0;  // one per process; stale completions compare it
    bool alive_ = false;
    boost::asio::posix::stream_descriptor pidfd_;
    boost::asio::posix::stream_descriptor log_;
    bool log_reading_ = false;
    std::optional<core::exit_status> exit_;
    std::array<char, 4096> buffer_;
};

}  // namespace torchpool::detail
