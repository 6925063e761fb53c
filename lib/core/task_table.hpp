// The task table: every task that has not completed, the queue of those waiting for a worker
// (one FIFO per priority), those waiting for room in a full queue, their deadlines, and which
// worker was sent what, and the earlier runs of a task that ran more than once. A worker runs
// the requests it is sent one at a time, in order, so the first one sent is running and the
// others (prefetched) have not started. A task ends here in one place (end), which keeps the
// counts and the deadline index right.
#pragma once

#include "types.hpp"
#include <torchpool/task.hpp>

#include <array>
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
        std::uint64_t fingerprint = 0;
        unsigned retries_left = 0;
        unsigned attempt = 0;  // runs so far, the one under way included
        std::uint8_t priority = 1;
        bool waiting_for_room = false;       // not admitted to the queue yet
        bool cancel_requested = false;       // running, and its worker was asked to stop it
        std::vector<task_attempt> failures;  // runs under workers that failed; rare
    };

    /// A request written to a worker. An abandoned one (timed out or cancelled before it
    /// started) still gets its reply, which is dropped.
    struct sent_task {
        task_id id;
        bool abandoned = false;
    };

    explicit task_table(std::size_t slots) : sent_(slots) {}

    /// Admits a task; it waits at the back of the queue of its priority. With `room`
    /// false, it waits for room in the queue instead (`admit_waiting`).
    void add(task_id id, std::string&& method, const task_options& options, time_point now,
             bool room = true);
    void add(task_id id, std::string&& method, std::chrono::milliseconds timeout, time_point now) {
        add(id, std::move(method), task_options{.timeout = timeout}, now);
    }
    /// Tasks waiting for room in the queue.
    std::size_t waiting() const noexcept { return waiting_; }
    /// Admits the task that has waited for room longest, of the highest priority; returns
    /// it, or nothing if none waits.
    std::optional<task_id> admit_waiting();
    /// A running task whose worker failed runs again: it goes back to the head of its queue
    /// (`slot`'s other tasks must have been released first). Uses up one retry.
    void retry(task_id id);
    /// Its worker is asked to stop it.
    void request_cancel(task_id id) { tasks_.at(id).cancel_requested = true; }
    /// Ends the task: it leaves the table, the queue count and the deadlines. Returns the
    /// runs it had under workers that failed (empty if none, or if it was not in the table).
    std::vector<task_attempt> end(task_id id);
    /// The worker running `id` failed (`run`); returns the failures so far, this one included.
    std::vector<task_attempt>& failed_under(task_id id, task_attempt run) {
        auto& failures = tasks_.at(id).failures;
        failures.push_back(std::move(run));
        return failures;
    }

    const task* find(task_id id) const;
    bool empty() const noexcept { return tasks_.empty(); }
    /// Tasks admitted to the queue, waiting for a worker.
    std::size_t queued() const noexcept { return queued_; }
    /// "task 7 ('crash')".
    std::string describe(task_id id) const;

    /// Takes the task at the head of the queue of the highest priority (there must be one)
    /// and sends it to `slot`; returns it.
    task_id send_next(slot_id slot, time_point* submitted = nullptr, unsigned* attempt = nullptr);
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

    /// Every task, or every task not sent to a worker (queued or waiting for room), by id.
    std::vector<task_id> ids() const;
    std::vector<task_id> queued_ids() const;
    /// Forgets the queue order (after every task not sent was completed).
    void clear_queue() {
        for (auto& q : queue_) {
            q.clear();
        }
        for (auto& q : room_) {
            q.clear();
        }
    }

private:
    using queues = std::array<std::deque<task_id>, priorities>;

    std::unordered_map<task_id, task> tasks_;
    queues queue_;             // by priority; may hold ids that already left, skipped on pop
    queues room_;              // waiting for room, by priority; the same
    std::size_t queued_ = 0;   // admitted tasks without a slot
    std::size_t waiting_ = 0;  // tasks waiting for room
    std::set<std::pair<time_point, task_id>> deadlines_;
    std::vector<std::deque<sent_task>> sent_;  // by slot
};

// The hot path (every task passes here), inline.

inline void task_table::add(task_id id, std::string&& method, const task_options& options,
                            time_point now, bool room) {
    task t{.method = std::move(method),
           .submitted = now,
           .fingerprint = options.fingerprint,
           .retries_left = options.retries,
           .priority = std::min<std::uint8_t>(options.priority, priorities - 1),
           .waiting_for_room = !room};
    if (options.timeout.count() > 0) {
        t.deadline = now + options.timeout;
        deadlines_.emplace(t.deadline, id);
    }
    const auto priority = t.priority;
    tasks_.emplace(id, std::move(t));
    if (room) {
        queue_[priority].push_back(id);
        ++queued_;
    } else {
        room_[priority].push_back(id);
        ++waiting_;
    }
}

inline std::vector<task_attempt> task_table::end(task_id id) {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) {
        return {};
    }
    if (it->second.deadline != time_point::max()) {
        deadlines_.erase({it->second.deadline, id});
    }
    if (it->second.waiting_for_room) {
        --waiting_;
    } else if (!it->second.slot) {
        --queued_;
    }
    std::vector<task_attempt> failures = std::move(it->second.failures);
    tasks_.erase(it);
    return failures;
}

inline task_id task_table::send_next(slot_id slot, time_point* submitted, unsigned* attempt) {
    for (;;) {
        auto level = priorities;
        while (queue_[level - 1].empty()) {
            --level;  // a queued task is in one of them
        }
        auto& queue = queue_[level - 1];
        const task_id id = queue.front();
        queue.pop_front();
        auto it = tasks_.find(id);
        if (it != tasks_.end() && !it->second.slot && !it->second.waiting_for_room) {
            it->second.slot = slot;
            ++it->second.attempt;
            --queued_;
            sent_[slot].push_back({id});
            if (submitted) {
                *submitted = it->second.submitted;
            }
            if (attempt) {
                *attempt = it->second.attempt;
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
