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
        const task_id id = sent[i].id;
        tasks_.at(id).slot.reset();
        queue_.push_front(id);
        ++queued_;
    }
    sent.clear();
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
