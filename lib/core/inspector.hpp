// What the pool reads of live processes and of the machine, for diagnostics and decisions: a
// worker's memory, what it is doing in the kernel, its CPU time, its uptime and the run time
// of its task, its last output; the machine's available memory and memory pressure. It reads
// through a process_probe (the driver's /proc readers; fakes in tests) and decides nothing.
#pragma once

#include "task_table.hpp"
#include "types.hpp"
#include "wording.hpp"
#include "worker_set.hpp"
#include <torchpool/task.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>

namespace torchpool::core {

/// Reads a live process (injected); each returns nullopt if it cannot, and any may be empty.
struct process_probe {
    std::function<std::optional<worker_memory>(int pid)> memory;
    /// The same with tensor shared memory told apart (slower; `memory` stands in if empty).
    std::function<std::optional<worker_memory>(int pid)> memory_exactly;
    std::function<std::optional<worker_activity>(int pid)> activity;
    /// The CPU time a process has used; a loading worker that uses more gets more time.
    std::function<std::optional<std::chrono::nanoseconds>(int pid)> cpu_time;
    /// Memory the machine has available for new processes (MemAvailable), in bytes.
    std::function<std::optional<std::uint64_t>()> available_memory;
    /// The share of the last 10 s in which every task waited for memory (PSI), in %.
    std::function<std::optional<double>()> memory_pressure;
};

class inspector {
public:
    /// `limits`: near them, a worker's memory is read exactly (memory_exactly).
    inspector(process_probe probe, const memory_params& limits, const worker_set& workers,
              const task_table& tasks)
        : probe_(std::move(probe)), limits_(limits), workers_(workers), tasks_(tasks) {}

    const process_probe& probe() const noexcept { return probe_; }

    /// What the caller of a task learns of the worker in slot `s`. `alive`: its process has
    /// not been reaped, so its memory can be read (a reaped pid may already be another
    /// process's); `stuck`: the pool gives up on it, so what it does in the kernel is read too.
    task_diagnostics diagnostics(slot_id s, time_point now, bool alive, bool stuck = false) const;
    /// The memory of the worker of `s` now, if it can be read. Read cheaply, then again
    /// exactly (tensor shared memory told apart, a few ms) if it is near a limit: the one
    /// place that decides, for the limits' samples and for a stopped worker's figures alike.
    std::optional<worker_memory> memory(slot_id s) const;
    /// The CPU time a child's process has used; nullopt before it has one, or if unknown.
    std::optional<std::chrono::nanoseconds> cpu_time(const supervised_child& child) const;
    /// The machine's memory now, for the evidence of an OOM kill.
    machine_memory machine() const;

private:
    process_probe probe_;
    memory_params limits_;
    const worker_set& workers_;
    const task_table& tasks_;
};

}  // namespace torchpool::core
