#include "task_table.hpp"

#include "report.hpp"

#include <algorithm>

namespace torchpool::core {

const task_table::task* task_table::find(task_id id) const {
    auto it = tasks_.find(id);
    return it == tasks_.end() ? nullptr : &it->second;
}

std::string task_table::describe(task_id id) const {
    const task* t = find(id);
    return describe_task(id, t ? &t->method : nullptr);
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
        auto& t = tasks_.at(sent[i].id);
        t.slot.reset();
        --t.attempt;  // it never started
        queue_[t.priority].push_front(sent[i].id);
        ++queued_;
    }
    sent.clear();
}

void task_table::retry(task_id id) {
    auto& t = tasks_.at(id);
    t.slot.reset();
    --t.retries_left;
    t.cancel_requested = false;
    queue_[t.priority].push_front(id);
    ++queued_;
}

std::optional<task_id> task_table::admit_waiting() {
    for (auto level = priorities; level-- > 0;) {
        auto& room = room_[level];
        while (!room.empty()) {
            const task_id id = room.front();
            room.pop_front();
            auto it = tasks_.find(id);
            if (it == tasks_.end() || !it->second.waiting_for_room) {
                continue;  // completed (cancelled, timed out) while it waited
            }
            it->second.waiting_for_room = false;
            --waiting_;
            queue_[level].push_back(id);
            ++queued_;
            return id;
        }
    }
    return std::nullopt;
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
