// The wording of what the pool tells people: plain sentences, pure functions. The report
// (report.hpp) words worker events with them; the core's units word task diagnostics with
// them, so that every sentence a caller or a log sees is written here.
#pragma once

#include "load_progress.hpp"
#include "types.hpp"
#include <torchpool/pool_params.hpp>
#include <torchpool/task.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace torchpool::core {

// The wording of diagnostics: plain sentences, pure functions.

/// "250 ms", "1.5 s".
std::string format_duration(std::chrono::milliseconds d);
/// How long a process killed while loading had: "1.0 s (pool_params::load_timeout)", or
/// more, with the extensions it was given for using CPU (and whether it then stopped using it).
std::string describe_load_time(std::chrono::milliseconds load_timeout, const load_progress& load);
/// Milliseconds from `from` to `to`, formatted.
std::string format_elapsed(time_point from, time_point to);
/// "was killed by signal SIGSEGV (core dumped)", "exited with code 3", ...
std::string describe_exit(const exit_status& status);
/// "; just before, it held 8.0 MiB of its own (private; PSS 9.1 MiB, RSS 20.3 MiB)", or
/// nothing when unknown.
std::string describe_memory(const std::optional<worker_memory>& memory);
/// " The kernel showed it sleeping in pipe_read, blocked in the system call read.", or
/// nothing when unknown.
std::string describe_activity(const std::optional<worker_activity>& activity);
/// "12.0 MiB".
std::string format_mib(std::uint64_t bytes);
/// For a worker SIGKILLed by no one in the pool, with no cgroup to say for certain: what
/// points at the kernel's OOM killer (its last sampled memory near the hard limit), said as
/// evidence; or nothing.
/// The machine's memory when a worker died: MemAvailable, and the share of the last 10 s in
/// which every task waited for memory (PSI "full avg10"), where the kernel tells.
struct machine_memory {
    std::optional<std::uint64_t> available_bytes;
    std::optional<double> full_pressure;
};
std::string oom_evidence(const exit_status& status, const std::optional<worker_memory>& last,
                         const memory_params& limits, const machine_memory& machine);
/// " Its last output line: \"...\"." or " It wrote nothing to stdout or stderr."
std::string describe_output(const std::string& log);
/// Why a start failed: the worker `pid` ended (`how`: describe_exit's words) before it said
/// hello; `log`: what it wrote.
std::string exited_before_ready(int pid, const std::string& how, time_point started, time_point now,
                                const std::string& log);
/// Why a start failed: the worker `pid` was killed for loading too long.
std::string not_ready_in_time(int pid, std::chrono::milliseconds load_timeout,
                              const load_progress& load, const std::string& log);
/// "task 7 ('crash')", or "task 7" when its method is not known.
std::string describe_task(task_id id, const std::string* method);

// How a task ended without a reply, one sentence each, for task_diagnostics::summary.
// `task` is describe_task's words; `d` the worker's diagnostics (pid, run time, uptime,
// memory, output) where a worker was involved.

std::string cancelled_in_queue(const std::string& task);
std::string cancelled_before_start(const std::string& task);
/// Terminal cancellation: the worker was told, and is killed if it does not answer within
/// `grace`.
std::string cancelled_while_running(const std::string& task, int pid,
                                    std::chrono::milliseconds grace);
/// Partial or total cancellation: the worker's handler stopped on it.
std::string stopped_on_cancel(const std::string& task, int pid);
/// The worker was asked to stop the task and died meanwhile; `death`: how, in a sentence.
std::string cancelled_then_died(const std::string& task, const std::string& death);
/// The task was running when each worker of `deaths` failed.
std::string poison_task(const std::string& task, const std::vector<task_attempt>& deaths,
                        std::uint64_t fingerprint, bool quarantined);
/// A task whose fingerprint is quarantined was refused.
std::string quarantined_task(const std::string& task, std::uint64_t fingerprint);
std::string deadline_in_queue(const std::string& task, std::chrono::milliseconds waited);
std::string deadline_before_start(const std::string& task, std::chrono::milliseconds waited,
                                  int pid);
/// The worker was stopped and will be replaced.
std::string deadline_while_running(const std::string& task, std::chrono::milliseconds waited,
                                   const task_diagnostics& d);
/// `what`: what the worker did wrong ("sent a frame that ...").
std::string protocol_error_while_running(const std::string& task, const std::string& what,
                                         const task_diagnostics& d);
/// The pool read `d.memory` over `limit` (pool_params::memory.hard_limit_bytes) and killed
/// the worker.
std::string memory_limit_while_running(const std::string& task, std::uint64_t limit,
                                       const task_diagnostics& d);
/// The kernel's OOM killer killed the worker at its memory cgroup's `limit`; `how`:
/// describe_exit's words.
std::string oom_killed_while_running(const std::string& task, const std::string& how,
                                     std::uint64_t limit, const task_diagnostics& d);
/// `how`: describe_exit's words.
std::string died_while_running(const std::string& task, const std::string& how,
                               const task_diagnostics& d);

}  // namespace torchpool::core
