// The task table: every admitted task that has not completed, the queue of those waiting
// for a worker, their deadlines, and which worker was sent what. A worker runs the requests
// it is sent one at a time, in order, so the first one sent is running and the others
// (prefetched) have not started. A task that leaves (completes) is forgotten here in one
// place, which keeps the queue count and the deadline index right.
#pragma once

#include "types.hpp"

#include <chrono>
#include <cstddef>
#include <deque>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace torchpool::core {

class task_table {
public:
    struct task {
        std::string method;
        time_point submitted;
        time_point deadline = time_point::max();
        std::optional<slot_id> slot;  // the worker it was sent to, if any
    };

    /// A request written to a worker. An abandoned one (timed out or cancelled before it
    /// started) still gets its reply, which is dropped.
    struct sent_task {
        task_id id;
        bool abandoned = false;
    };

    explicit task_table(std::size_t slots) : sent_(slots) {}

    /// Admits a task; it waits at the back of the queue. A zero timeout: no deadline.
    void add(task_id id, std::string&& method, std::chrono::milliseconds timeout, time_point now);
    /// Completed: removed from the table, the queue count and the deadlines.
    void forget(task_id id);

    const task* find(task_id id) const;
    bool empty() const noexcept { return tasks_.empty(); }
    /// Tasks waiting for a worker.
    std::size_t queued() const noexcept { return queued_; }
    /// "task 7 ('crash')".
    std::string describe(task_id id) const;

    /// Takes the task at the head of the queue (there must be one) and sends it to `slot`;
    /// returns it.
    task_id send_next(slot_id slot, time_point* submitted = nullptr);
    /// What `slot` was sent and has not answered, oldest (running) first.
    const std::deque<sent_task>& sent(slot_id slot) const { return sent_[slot]; }
    /// The task `slot` is running, unless it runs nothing or one that was abandoned.
    std::optional<task_id> running(slot_id slot) const;
    /// `slot` answered the task it was running: it is no longer sent there.
    sent_task answered(slot_id slot);
    /// Task `id`, sent to `slot` and not started, will not run: its reply is dropped.
    void abandon(slot_id slot, task_id id);
    /// `slot` will answer nothing more. Its running task has been dealt with; the others
    /// never started, so they go back to the head of the queue in their order.
    void release(slot_id slot);
    /// `slot` will answer nothing more, and what it was sent has been dealt with.
    void drop_sent(slot_id slot) { sent_[slot].clear(); }

    /// The task whose deadline comes first, if it is due at `now`.
    std::optional<task_id> due(time_point now) const;
    std::optional<time_point> next_deadline() const;

    /// Every task, or every queued task, by id.
    std::vector<task_id> ids() const;
    std::vector<task_id> queued_ids() const;
    /// Forgets the queue order (after every queued task was completed).
    void clear_queue() { queue_.clear(); }

private:
    std::unordered_map<task_id, task> tasks_;
    std::deque<task_id> queue_;  // may hold ids that already left; skipped on pop
    std::size_t queued_ = 0;     // tasks without a slot
    std::set<std::pair<time_point, task_id>> deadlines_;
    std::vector<std::deque<sent_task>> sent_;  // by slot
};

// The hot path (every task passes here), inline.

inline void task_table::add(task_id id, std::string&& method, std::chrono::milliseconds timeout,
                            time_point now) {
    task t{.method = std::move(method), .submitted = now};
    if (timeout.count() > 0) {
        t.deadline = now + timeout;
        deadlines_.emplace(t.deadline, id);
    }
    tasks_.emplace(id, std::move(t));
    queue_.push_back(id);
    ++queued_;
}

inline void task_table::forget(task_id id) {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) {
        return;
    }
    if (it->second.deadline != time_point::max()) {
        deadlines_.erase({it->second.deadline, id});
    }
    if (!it->second.slot) {
        --queued_;
    }
    tasks_.erase(it);
}

inline task_id task_table::send_next(slot_id slot, time_point* submitted) {
    for (;;) {
        const task_id id = queue_.front();
        queue_.pop_front();
        auto it = tasks_.find(id);
        if (it != tasks_.end() && !it->second.slot) {
            it->second.slot = slot;
            --queued_;
            sent_[slot].push_back({id});
            if (submitted) {
                *submitted = it->second.submitted;
            }
            return id;
        }
        // Otherwise it completed (cancelled, timed out) while queued.
    }
}

inline std::optional<task_id> task_table::running(slot_id slot) const {
    const auto& sent = sent_[slot];
    if (sent.empty() || sent.front().abandoned) {
        return std::nullopt;
    }
    return sent.front().id;
}

inline task_table::sent_task task_table::answered(slot_id slot) {
    const sent_task done = sent_[slot].front();
    sent_[slot].pop_front();
    return done;
}

inline std::optional<task_id> task_table::due(time_point now) const {
    if (deadlines_.empty() || deadlines_.begin()->first > now) {
        return std::nullopt;
    }
    return deadlines_.begin()->second;
}

inline std::optional<time_point> task_table::next_deadline() const {
    if (deadlines_.empty()) {
        return std::nullopt;
    }
    return deadlines_.begin()->first;
}

}  // namespace torchpool::core
