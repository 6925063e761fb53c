// Dynamic batching for one model: requests are stacked along their first (batch) dimension
// into one task of up to `max_batch` rows, sent once it is full, once a worker is free (fewer
// tasks out than `workers`), or once `delay` has passed since the *oldest* waiting request
// arrived while at most one batch waits behind each busy worker (so that it starts its next
// batch at once; more would only wait in the pool's queue); the outputs are split back. So a
// lone request goes at once, and batches grow by themselves while every worker is busy.
// One exception to "a free worker takes it at once": when other requests are in flight and
// requests arrive faster than one per half the delay, a request is held for company, for
// about four arrivals at that pace (never past the delay): a batch of a few costs a model
// little more than one request alone, so under a steady load the workers spend far less per
// request, and latency falls rather than rises. When a worker
// fails under a batch (dies, is killed for memory, breaks the protocol), each request of it
// runs again on its own, once: a poison request then fails alone, with its cause, and the
// others get their answers.
#pragma once

#include <torchpool/pool.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace torchpool::serve {

/// What a request of a batch gets: its outputs, or the error and the pool's words for it.
struct batch_result {
    boost::system::error_code error;
    std::vector<tensor> outputs;
    std::string why;
    std::size_t batch_rows = 0;  // rows of the task it ran in
};

// Sans-io helpers, unit-tested.

/// Rows of a request: the first dimension of its first input (1 for a scalar).
std::int64_t rows_of(const std::vector<tensor>& inputs);
/// Whether a request can join a batch at all: at least one row, and every input has the same
/// first (batch) dimension. A request of 0 rows, or whose inputs disagree on their rows, runs
/// alone, so that the model itself answers it (a model whose batch may be empty returns
/// outputs of 0 rows).
bool batchable(const std::vector<tensor>& inputs);
/// Whether two requests can share a batch: same number of inputs, same types, and the same
/// sizes past the first dimension.
bool stackable(const std::vector<tensor>& a, const std::vector<tensor>& b);
/// The inputs of several requests stacked along the first dimension.
std::vector<tensor> stack(const std::vector<const std::vector<tensor>*>& requests);
/// Splits a batch's outputs back: request i gets `rows[i]` rows of each. Empty if an output's
/// first dimension is not the sum of the rows (the model did not keep the batch), or if there
/// are no rows at all.
std::vector<std::vector<tensor>> split(const std::vector<tensor>& outputs,
                                       const std::vector<std::int64_t>& rows);

class batcher {
public:
    struct params {
        std::string method = "forward";
        std::size_t max_batch = 1;  // rows; 1: no batching
        std::chrono::microseconds delay{0};
        /// Workers of the pool: with fewer tasks out than this, one is free.
        std::size_t workers = 1;
        std::chrono::milliseconds timeout{30'000};
        /// Told the rows of each task sent (for metrics). Optional.
        std::function<void(std::size_t rows)> on_send;
    };

    batcher(pool& workers, params p);

    /// Runs `inputs` (checked against the model already), alone or in a batch; `inject`: a
    /// fault for tests (the pool must allow them). Handler signature: `void(batch_result)`.
    /// Cancellation (any type): a waiting request is removed; one running alone has its task
    /// cancelled (terminal: its worker is told, and replaced if it does not stop); one in a
    /// batch completes at once and its rows are dropped. It completes with operation_aborted.
    template <class Token>
    auto async_infer(std::vector<tensor> inputs, fault inject, Token&& token) {
        return boost::asio::async_initiate<Token, void(batch_result)>(
            [this](auto handler, std::vector<tensor> in, fault f) {
                enqueue(std::move(in), f, handler_type(std::move(handler)));
            },
            token, std::move(inputs), inject);
    }

    std::size_t waiting() const noexcept { return waiting_.size(); }
    void on_send(std::function<void(std::size_t rows)> f) { params_.on_send = std::move(f); }
    /// Sends every waiting request now (the server drains: the pool is about to stop taking
    /// tasks).
    void flush_all();

private:
    using handler_type = boost::asio::any_completion_handler<void(batch_result)>;
    struct item {
        std::vector<tensor> inputs;
        fault inject;
        // Empty once completed (or cancelled). Optional rather than assigned: Boost 1.81's
        // any_completion_handler move assignment recurses forever.
        std::optional<handler_type> handler;
        std::chrono::steady_clock::time_point arrived;
        enum class where { waiting, alone, in_batch } at = where::waiting;
        boost::asio::cancellation_signal cancel_task;  // of the pool task it runs alone in
    };

    /// Its caller cancelled it (its client went away): removed if it waits; its pool task
    /// cancelled if it runs alone; its rows dropped if it runs in a batch.
    void cancel(const std::shared_ptr<item>& it);
    /// Completes it, once.
    static void finish(item& it, batch_result r);

    void enqueue(std::vector<tensor> inputs, fault inject, handler_type handler);
    void arm_timer();
    /// Whether a batch due by the delay may go while every worker is busy: one may wait behind
    /// each (so that a worker starts its next batch at once), no more. A batch sent beyond that
    /// would only wait in the pool's queue, where it can no longer grow.
    bool room_ahead() const noexcept;
    /// When the oldest waiting request must go: `delay` after it arrived; sooner while a worker
    /// is free (it was held only for company expected soon).
    std::chrono::steady_clock::time_point send_by() const;
    /// Sends the oldest request and those that can join it, up to max_batch rows.
    void flush();
    void run_batch(std::vector<std::shared_ptr<item>> batch);
    /// A task completed: a worker is free, so what waits goes now.
    void task_done();
    void run_alone(std::shared_ptr<item> one);

    pool& workers_;
    params params_;
    std::deque<std::shared_ptr<item>> waiting_;
    std::int64_t waiting_rows_ = 0;
    std::size_t tasks_out_ = 0;  // sent to the pool, not completed
    // The last arrival, and the average gap between arrivals that found others in flight.
    std::optional<std::chrono::steady_clock::time_point> last_arrival_;
    std::optional<std::chrono::steady_clock::duration> gap_;
    boost::asio::steady_timer timer_;
    // When the timer fires; empty while it is not armed.
    std::optional<std::chrono::steady_clock::time_point> armed_for_;
};

}  // namespace torchpool::serve
