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
// Why a task was not admitted; `method` may be null (said of any task).
std::string refused_shutting_down(const std::string& method);
std::string refused_degraded(const std::string* method, const std::string& last_start_failure);
std::string refused_queue_full(const std::string& method, std::size_t queued);
std::string shut_down_before_start();
/// `task`: describe_task's words.
std::string cancelled_with_pool(const std::string& task);
/// The worker's handler threw or returned an error.
std::string reported_error(int pid, const std::string& task, const std::string& type,
                           const std::string& message);
/// Appended to the summary of a task that failed under `runs` workers.
std::string no_retries_left(std::size_t runs);

// What a child did wrong, as verb phrases ("sent a second hello message"), said of a worker
// or the fork server.
std::string sent_pool_message(const char* message_name);
std::string second_hello();
std::string sent_descriptors();
std::string output_memory_missing();
std::string hello_while_stopping();
std::string other_protocol_version(std::uint32_t theirs, std::uint32_t ours);
/// `running`: it runs some task, but not that one.
std::string unexpected_reply(std::uint64_t task, bool running);
/// `channel_end`: how its channel ended ("closed its channel").
std::string closed_without_exit(const std::string& channel_end);
/// "..., and was killed" phrases for a child the pool killed.
std::string killed_for(std::string what);
std::string not_started_in_time(std::chrono::milliseconds spawn_timeout);
std::string not_ready_in_time(std::chrono::milliseconds load_timeout, const load_progress& load);
std::string fork_request_unanswered(std::chrono::milliseconds spawn_timeout);
/// A worker that broke its protocol (`what`) before it was ready: why its start failed.
std::string broke_protocol_before_ready(int pid, const std::string& what);

// Why a worker is recycled (clauses: "it answered 100 tasks (...)").
std::string recycle_after_tasks(std::size_t tasks);
std::string recycle_over_soft_limit(std::uint64_t held, std::uint64_t limit);
std::string recycle_for_age(time_point ready_since, time_point now);

/// How the fork server's process ended: `kill_reason` (a verb phrase) if the pool killed
/// it, else `how` (describe_exit's words) and when.
std::string fork_server_end(int pid, const std::string& kill_reason, const std::string& how,
                            bool was_starting, time_point started, time_point now,
                            const std::string& log);
std::string fork_server_not_started(const std::string& why);

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
