// Dynamic batching for one model: requests are stacked along their first (batch) dimension
// into one task of up to `max_batch` rows, sent when `batch_policy` says (batch_policy.hpp:
// full, a free worker, or the delay since the oldest waiting request), and the outputs are
// split back. When a worker fails under a batch (dies, is killed for memory, breaks the
// protocol), each request of it runs again on its own, once: a poison request then fails
// alone, with its cause, and the others get their answers.
#pragma once

#include "batch_policy.hpp"
#include "input_memory.hpp"
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
/// The inputs of several requests stacked along the first dimension: each row copied once,
/// into `memory` when it gives a tensor (the pool's input memory: not copied again on its
/// way to the worker), else into the tensor's own bytes.
std::vector<tensor> stack(const std::vector<const std::vector<tensor>*>& requests,
                          const input_memory& memory = {});
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
    /// Arms the timer for when the policy wants to look again, if sooner than it is armed.
    void arm_timer();
    /// Sends the oldest request and those that can join it, up to max_batch rows.
    void flush();
    /// `inject`: the one fault its requests asked for, if any (flush never mixes two).
    void run_batch(std::vector<std::shared_ptr<item>> batch, fault inject);
    /// A task completed: a worker is free, so what waits goes now.
    void task_done();
    void run_alone(std::shared_ptr<item> one);

    pool& workers_;
    params params_;
    batch_policy policy_;
    std::deque<std::shared_ptr<item>> waiting_;
    boost::asio::steady_timer timer_;
    // When the timer fires; empty while it is not armed.
    std::optional<std::chrono::steady_clock::time_point> armed_for_;
};

}  // namespace torchpool::serve
