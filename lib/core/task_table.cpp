#include "task_table.hpp"

#include <algorithm>

namespace torchpool::core {

void task_table::add(task_id id, std::string method, std::chrono::milliseconds timeout,
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

void task_table::forget(task_id id) {
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

const task_table::task* task_table::find(task_id id) const {
    auto it = tasks_.find(id);
    return it == tasks_.end() ? nullptr : &it->second;
}

std::string task_table::describe(task_id id) const {
    const task* t = find(id);
    return "task " + std::to_string(id) + (t ? " ('" + t->method + "')" : std::string());
}

task_id task_table::send_next(slot_id slot) {
    for (;;) {
        const task_id id = queue_.front();
        queue_.pop_front();
        auto it = tasks_.find(id);
        if (it != tasks_.end() && !it->second.slot) {
            it->second.slot = slot;
            --queued_;
            sent_[slot].push_back({id});
            return id;
        }
        // Otherwise it completed (cancelled, timed out) while queued.
    }
}

std::optional<task_id> task_table::running(slot_id slot) const {
    const auto& sent = sent_[slot];
    if (sent.empty() || sent.front().abandoned) {
        return std::nullopt;
    }
    return sent.front().id;
}

task_table::sent_task task_table::answered(slot_id slot) {
    const sent_task done = sent_[slot].front();
    sent_[slot].pop_front();
    return done;
}

void task_table::abandon(slot_id slot, task_id id) {
    for (auto& s : sent_[slot]) {
        if (s.id == id) {
            s.abandoned = true;
        }
    }
}

void task_table::release(slot_id slot) {
    auto& sent = sent_[slot];
    for (std::size_t i = sent.size(); i-- > 1;) {
        if (sent[i].abandoned) {
            continue;
        }
        const task_id id = sent[i].id;
        tasks_.at(id).slot.reset();
        queue_.push_front(id);
        ++queued_;
    }
    sent.clear();
}

std::optional<task_id> task_table::due(time_point now) const {
    if (deadlines_.empty() || deadlines_.begin()->first > now) {
        return std::nullopt;
    }
    return deadlines_.begin()->second;
}

std::optional<time_point> task_table::next_deadline() const {
    if (deadlines_.empty()) {
        return std::nullopt;
    }
    return deadlines_.begin()->first;
}

std::vector<task_id> task_table::ids() const {
    std::vector<task_id> ids;
    ids.reserve(tasks_.size());
    for (const auto& [id, t] : tasks_) {
        ids.push_back(id);
    }
    std::sort(ids.begin(), ids.end());
    return ids;
}

std::vector<task_id> task_table::queued_ids() const {
    std::vector<task_id> ids;
    for (const auto& [id, t] : tasks_) {
        if (!t.slot) {
            ids.push_back(id);
        }
    }
    std::sort(ids.begin(), ids.end());
    return ids;
}

}  // namespace torchpool::core
