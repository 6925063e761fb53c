// When the batcher sends what waits: the policy alone, without queue, timer or pool, so that
// its tests run on a simulated clock (every decision takes `now`).
//
// A batch goes once it is full, once a worker is free (fewer tasks out than workers), or once
// `delay` has passed since the *oldest* waiting request arrived while at most one batch waits
// behind each busy worker (so that it starts its next batch at once; more would only wait in
// the pool's queue, where a batch can no longer grow). So a lone request goes at once, and
// batches grow by themselves while every worker is busy.
//
// One exception to "a free worker takes it at once": when other requests are in flight and
// requests arrive faster than one per half the delay, a request is held for company, but only
// for the requests that have already arrived with it: it is due at once by the timer, whose
// handler the event loop runs after those it has ready (the requests read in the same turn).
// A batch of a few costs a model little more than one request alone, so under a steady load
// the workers spend far less per request; holding for requests yet to come left a worker idle.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

namespace torchpool::serve {

class batch_policy {
public:
    using clock = std::chrono::steady_clock;

    struct params {
        std::size_t max_batch = 1;  // rows; 1: no batching
        clock::duration delay{};
        /// Workers of the pool: with fewer tasks out than this, one is free.
        std::size_t workers = 1;
    };

    explicit batch_policy(params p) : params_(p) {}

    /// Whether a request of `rows` waits to be batched; if not, it runs alone at once (batching
    /// off, a request that cannot be stacked, or a batch on its own).
    bool batches(std::int64_t rows, bool stackable) const noexcept;
    /// A request of `rows` arrived at `now` and waits.
    void arrived(clock::time_point now, std::int64_t rows);
    /// Whether the oldest waiting request goes now, just after an arrival: its batch is full,
    /// or a worker is free and the request is not held for company.
    bool send_on_arrival() const noexcept;
    /// Whether it goes now that a task completed.
    bool send_on_task_done() const noexcept;
    /// Whether it goes at `now` by the delay; `oldest`: when the oldest waiting one arrived.
    bool send_on_timer(clock::time_point now, clock::time_point oldest) const noexcept;
    /// When to look again (`send_on_timer`); nothing while nothing waits, or while a batch
    /// already waits behind every busy worker (the next completed task sends it).
    std::optional<clock::time_point> wake_at(clock::time_point oldest) const noexcept;

    /// `requests` waiting requests of `rows` rows in all stopped waiting: taken into a task, or
    /// gone (their client went away).
    void taken(std::int64_t rows, std::size_t requests) noexcept;
    /// A task went to the pool.
    void sent() noexcept { ++tasks_out_; }
    /// A task completed: a worker is free.
    void task_done() noexcept;

    std::size_t max_batch() const noexcept { return params_.max_batch; }
    std::size_t tasks_out() const noexcept { return tasks_out_; }
    std::size_t waiting() const noexcept { return waiting_; }

private:
    bool worker_free() const noexcept { return tasks_out_ < params_.workers; }
    bool room_ahead() const noexcept { return tasks_out_ < 2 * params_.workers; }
    bool full() const noexcept {
        return waiting_rows_ >= static_cast<std::int64_t>(params_.max_batch);
    }
    clock::time_point send_by(clock::time_point oldest) const noexcept;

    params params_;
    std::size_t waiting_ = 0;
    std::int64_t waiting_rows_ = 0;
    std::size_t tasks_out_ = 0;  // sent to the pool, not completed
    // The last arrival, and the average gap between arrivals that found others in flight.
    std::optional<clock::time_point> last_arrival_;
    std::optional<clock::duration> gap_;
    bool hold_ = false;  // the last arrival is held for company
};

}  // namespace torchpool::serve
