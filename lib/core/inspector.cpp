#include "inspector.hpp"

#include "memory_watch.hpp"

namespace torchpool::core {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

task_diagnostics inspector::diagnostics(slot_id s, time_point now, bool alive, bool stuck) const {
    const auto& w = workers_[s];
    task_diagnostics d;
    d.worker_pid = w.child.pid();
    if (alive && d.worker_pid > 0) {
        // What it is doing first: reading its memory takes the kernel longer.
        if (stuck && probe_.activity) {
            d.activity = probe_.activity(d.worker_pid);
        }
        d.memory = memory(s);
    }
    d.worker_uptime = duration_cast<milliseconds>(now - w.child.process_start());
    if (!tasks_.sent(s).empty()) {
        d.task_run_time = duration_cast<milliseconds>(now - w.task_start);
    }
    d.log_tail = w.child.log().text();
    return d;
}

std::optional<worker_memory> inspector::memory(slot_id s) const {
    if (!probe_.memory) {
        return std::nullopt;
    }
    const int pid = workers_[s].child.pid();
    auto m = probe_.memory(pid);
    if (m && probe_.memory_exactly && near_memory_limit(limits_, m->private_bytes)) {
        // The cheap reading counts results the host has not read yet as the worker's own.
        m = probe_.memory_exactly(pid);
    }
    return m;
}

std::optional<std::chrono::nanoseconds> inspector::cpu_time(const supervised_child& child) const {
    if (child.awaiting_process() || !probe_.cpu_time) {
        return std::nullopt;
    }
    return probe_.cpu_time(child.pid());
}

machine_memory inspector::machine() const {
    machine_memory m;
    if (probe_.available_memory) {
        m.available_bytes = probe_.available_memory();
    }
    if (probe_.memory_pressure) {
        m.full_pressure = probe_.memory_pressure();
    }
    return m;
}

}  // namespace torchpool::core
