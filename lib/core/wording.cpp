#include "wording.hpp"

#include <torchpool/error.hpp>

#include <cstdio>

#include <signal.h>

namespace torchpool::core {

std::string format_duration(std::chrono::milliseconds d) {
    char text[32];
    if (d < std::chrono::milliseconds{1000}) {
        std::snprintf(text, sizeof text, "%lld ms", static_cast<long long>(d.count()));
    } else {
        std::snprintf(text, sizeof text, "%.1f s", static_cast<double>(d.count()) / 1000.0);
    }
    return text;
}

std::string describe_load_time(std::chrono::milliseconds load_timeout, const load_progress& load) {
    const auto extensions = load.extensions();
    if (extensions == 0) {
        return format_duration(load_timeout) + " (pool_params::load_timeout)";
    }
    return format_duration(load_timeout * static_cast<long>(extensions + 1)) +
           " (pool_params::load_timeout, given again " + std::to_string(extensions) +
           (extensions == 1 ? " time" : " times") +
           " for using CPU: pool_params::load_extensions)" +
           (load.stuck() ? ", then used no CPU time for " + format_duration(load_timeout) : "");
}

std::string format_elapsed(time_point from, time_point to) {
    return format_duration(std::chrono::duration_cast<std::chrono::milliseconds>(to - from));
}

std::string describe_exit(const exit_status& status) {
    if (status.signal) {
        std::string text = "was killed by signal " + signal_name(*status.signal);
        if (status.core_dumped) {
            text += " (core dumped)";
        }
        return text;
    }
    if (status.exit_code) {
        return "exited with code " + std::to_string(*status.exit_code);
    }
    return "ended";
}

std::string describe_memory(const std::optional<worker_memory>& memory) {
    if (!memory) {
        return {};
    }
    char text[240];
    const auto mib = [](std::uint64_t bytes) { return static_cast<double>(bytes) / (1 << 20); };
    const int n = std::snprintf(
        text, sizeof text,
        "; just before, it held %.1f MiB of its own (private; PSS %.1f MiB, RSS %.1f MiB)",
        mib(memory->private_bytes), mib(memory->pss_bytes), mib(memory->rss_bytes));
    if (memory->shared_memory_bytes && n > 0 && static_cast<std::size_t>(n) < sizeof text) {
        std::snprintf(text + n, sizeof text - static_cast<std::size_t>(n),
                      ", besides %.1f MiB of tensors in shared memory",
                      mib(*memory->shared_memory_bytes));
    }
    return text;
}

std::string format_mib(std::uint64_t bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
    return text;
}

std::string oom_evidence(const exit_status& status, const std::optional<worker_memory>& last,
                         const memory_params& limits, const machine_memory& machine) {
    if (status.signal != SIGKILL || status.oom_killed) {
        return {};
    }
    std::string text;
    const std::uint64_t limit = limits.hard_limit_bytes;
    if (last && limit > 0 && last->private_bytes >= limit / 10 * 8) {
        text = " Its memory, when last read, was " + format_mib(last->private_bytes) +
               " of its own, near its hard limit of " + format_mib(limit) +
               ": the kernel's OOM killer may have killed it.";
    }
    if (machine.available_bytes) {
        // SIGKILL is also what the kernel's OOM killer sends: what the machine's memory was
        // like is the evidence there is, said as such.
        text +=
            " When it died the machine had " + format_mib(*machine.available_bytes) + " available";
        if (machine.full_pressure) {
            char pct[32];
            std::snprintf(pct, sizeof pct, "%.1f%%", *machine.full_pressure);
            text += std::string(", and every task was stalled on memory ") + pct +
                    " of the last 10 s (PSI)";
        }
        text += ".";
    }
    return text;
}

std::string describe_activity(const std::optional<worker_activity>& a) {
    if (!a) {
        return {};
    }
    std::string text;
    switch (a->state) {
        case 'R':
            text = " The kernel showed it running";
            break;
        case 'S':
            text = " The kernel showed it sleeping";
            break;
        case 'D':
            text =
                " The kernel showed it in an uninterruptible wait (D: disk, memory or a "
                "driver)";
            break;
        case 'T':
        case 't':
            text = " The kernel showed it stopped (by SIGSTOP or a debugger)";
            break;
        case 'Z':
            return " It had already exited.";
        default:
            text = " The kernel showed it in state '" + std::string(1, a->state) + "'";
            break;
    }
    if (!a->wchan.empty()) {
        text += " in " + a->wchan;
    }
    if (!a->syscall.empty()) {
        text += ", blocked in the system call " + a->syscall;
    }
    return text + ".";
}

namespace {

std::string last_line(const std::string& log) {
    std::string_view view = log;
    while (!view.empty() && (view.back() == '\n' || view.back() == '\r')) {
        view.remove_suffix(1);
    }
    if (auto nl = view.rfind('\n'); nl != std::string_view::npos) {
        view.remove_prefix(nl + 1);
    }
    return std::string(view);
}

}  // namespace

std::string describe_output(const std::string& log) {
    return log.empty() ? std::string(" It wrote nothing to stdout or stderr.")
                       : " Its last output line: \"" + last_line(log) + "\".";
}

std::string exited_before_ready(int pid, const std::string& how, time_point started, time_point now,
                                const std::string& log) {
    return "worker " + std::to_string(pid) + " " + how + " before it was ready, " +
           format_elapsed(started, now) + " after it started." + describe_output(log);
}

std::string not_ready_in_time(int pid, std::chrono::milliseconds load_timeout,
                              const load_progress& load, const std::string& log) {
    return "worker " + std::to_string(pid) + " " + not_ready_in_time(load_timeout, load) + "." +
           describe_output(log);
}

std::string describe_task(task_id id, const std::string* method) {
    return "task " + std::to_string(id) + (method ? " ('" + *method + "')" : std::string());
}

std::string cancelled_in_queue(const std::string& task) {
    return "The caller cancelled " + task + " while it waited in the queue.";
}

std::string cancelled_before_start(const std::string& task) {
    return "The caller cancelled " + task + " before it started.";
}

std::string cancelled_while_running(const std::string& task, int pid,
                                    std::chrono::milliseconds grace) {
    return "The caller cancelled " + task + " while worker " + std::to_string(pid) +
           " ran it; the worker was told to stop, and is killed and replaced if it has not "
           "answered within " +
           format_duration(grace) + " (pool_params::cancel_grace).";
}

std::string stopped_on_cancel(const std::string& task, int pid) {
    return "The caller cancelled " + task + " while worker " + std::to_string(pid) +
           " ran it, and its handler stopped; the worker stays up.";
}

std::string cancelled_then_died(const std::string& task, const std::string& death) {
    return "The caller cancelled " + task + ", and its worker failed before it answered: " + death;
}

namespace {

std::string hex(std::uint64_t value) {
    char text[24];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
    return text;
}

}  // namespace

std::string poison_task(const std::string& task, const std::vector<task_attempt>& deaths,
                        std::uint64_t fingerprint, bool quarantined) {
    std::string text = task + " was running when " + std::to_string(deaths.size()) +
                       " workers failed (pool_params::poison.deaths), so it is a poison task and "
                       "is not run again.";
    for (std::size_t i = 0; i < deaths.size(); ++i) {
        text += " Run " + std::to_string(i + 1) + ": " + deaths[i].summary;
    }
    if (fingerprint != 0) {
        text += " Its fingerprint is " + hex(fingerprint) +
                (quarantined ? "; it is quarantined: the same task submitted again fails at once."
                             : ".");
    }
    return text;
}

std::string quarantined_task(const std::string& task, std::uint64_t fingerprint) {
    return task + " was not run: a task with the same method, payload and tensors (fingerprint " +
           hex(fingerprint) +
           ") was a poison task before, and is quarantined (pool_params::poison.quarantine).";
}

std::string deadline_in_queue(const std::string& task, std::chrono::milliseconds waited) {
    return task + " waited " + format_duration(waited) +
           " in the queue and passed its deadline before a worker was free.";
}

std::string deadline_before_start(const std::string& task, std::chrono::milliseconds waited,
                                  int pid) {
    return task + " waited " + format_duration(waited) + " behind another task on worker " +
           std::to_string(pid) + " and passed its deadline before it started.";
}

std::string deadline_while_running(const std::string& task, std::chrono::milliseconds waited,
                                   const task_diagnostics& d) {
    return task + " passed its deadline after " + format_duration(waited) + " (" +
           format_duration(d.task_run_time) + " of it running on worker " +
           std::to_string(d.worker_pid) + "); the worker was stopped and will be replaced" +
           describe_memory(d.memory) + "." + describe_activity(d.activity);
}

std::string protocol_error_while_running(const std::string& task, const std::string& what,
                                         const task_diagnostics& d) {
    return "Worker " + std::to_string(d.worker_pid) + " " + what + " while running " + task +
           "; it was killed" + describe_memory(d.memory) + ".";
}

std::string memory_limit_while_running(const std::string& task, std::uint64_t limit,
                                       const task_diagnostics& d) {
    return "Worker " + std::to_string(d.worker_pid) + " held " +
           format_mib(d.memory ? d.memory->private_bytes : 0) +
           " of its own, over its hard limit of " + format_mib(limit) +
           " (pool_params::memory.hard_limit_bytes) while running " + task + ", " +
           format_duration(d.task_run_time) + " into it; it was killed and will be replaced.";
}

std::string oom_killed_while_running(const std::string& task, const std::string& how,
                                     std::uint64_t limit, const task_diagnostics& d) {
    return "Worker " + std::to_string(d.worker_pid) + " " + how + " while running " + task + ", " +
           format_duration(d.task_run_time) +
           " into it: the kernel's OOM killer killed it when it reached the limit of its memory "
           "cgroup, " +
           format_mib(limit) + " (pool_params::memory.hard_limit_bytes)." +
           describe_output(d.log_tail);
}

std::string died_while_running(const std::string& task, const std::string& how,
                               const task_diagnostics& d) {
    return "Worker " + std::to_string(d.worker_pid) + " " + how + " while running " + task + ", " +
           format_duration(d.task_run_time) + " into it; it had been up " +
           format_duration(d.worker_uptime) + "." + describe_output(d.log_tail);
}

std::string refused_shutting_down(const std::string& method) {
    return "The pool is shutting down, so task '" + method + "' was not run.";
}

std::string refused_degraded(const std::string* method, const std::string& last_start_failure) {
    return std::string("No worker can be started, so ") +
           (method ? "task '" + *method + "'" : std::string("the task")) +
           " was not run. Last start failure: " + last_start_failure;
}

std::string refused_queue_full(const std::string& method, std::size_t queued) {
    return "The queue already holds " + std::to_string(queued) +
           " tasks (pool_params::queue_limit), so task '" + method + "' was not run.";
}

std::string shut_down_before_start() {
    return "The pool was shut down before it started.";
}

std::string cancelled_with_pool(const std::string& task) {
    return "The pool was cancelled before " + task + " finished.";
}

std::string reported_error(int pid, const std::string& task, const std::string& type,
                           const std::string& message) {
    return "Worker " + std::to_string(pid) + " reported an error in " + task + ": " + type + ": " +
           message;
}

std::string no_retries_left(std::size_t runs) {
    return " It was run " + std::to_string(runs) +
           " times; no retries were left (request::retries).";
}

std::string sent_pool_message(const char* message_name) {
    return std::string("sent a ") + message_name + " message, which only the pool may send";
}

std::string sent_descriptors() {
    return "sent file descriptors with a message other than its hello (which may carry its "
           "output memory)";
}

std::string output_memory_missing() {
    return "said hello with the capability \"shared-memory\" but did not send exactly one "
           "descriptor (its output memory) with it";
}

std::string second_hello() {
    return "sent a second hello message";
}

std::string hello_while_stopping() {
    return "sent hello while it was being stopped";
}

std::string other_protocol_version(std::uint32_t theirs, std::uint32_t ours) {
    return "sent hello with protocol version " + std::to_string(theirs) + " (this pool speaks " +
           std::to_string(ours) + ")";
}

std::string unexpected_reply(std::uint64_t task, bool running) {
    return "sent a reply for task " + std::to_string(task) +
           (running ? ", which it was not running," : " while it runs no task");
}

std::string closed_without_exit(const std::string& channel_end) {
    return channel_end + " but did not exit";
}

std::string killed_for(std::string what) {
    return std::move(what) + "; it was killed";
}

std::string not_started_in_time(std::chrono::milliseconds spawn_timeout) {
    return "could not be started within " + format_duration(spawn_timeout) +
           " (pool_params::spawn_timeout) and was killed";
}

std::string not_ready_in_time(std::chrono::milliseconds load_timeout, const load_progress& load) {
    return "did not become ready within " + describe_load_time(load_timeout, load) +
           " and was killed";
}

std::string fork_request_unanswered(std::chrono::milliseconds spawn_timeout) {
    return "did not answer a request for a worker within " + format_duration(spawn_timeout) +
           " (pool_params::spawn_timeout) and was killed";
}

std::string broke_protocol_before_ready(int pid, const std::string& what) {
    return "worker " + std::to_string(pid) + " " + what + " before it was ready.";
}

std::string recycle_after_tasks(std::size_t tasks) {
    return "it answered " + std::to_string(tasks) + " tasks (pool_params::recycle.max_tasks)";
}

std::string recycle_over_soft_limit(std::uint64_t held, std::uint64_t limit) {
    return "it held " + format_mib(held) + " of its own, over its soft limit of " +
           format_mib(limit) + " (pool_params::memory.soft_limit_bytes)";
}

std::string recycle_for_age(time_point ready_since, time_point now) {
    return "it has been ready for " + format_elapsed(ready_since, now) +
           " (pool_params::recycle.max_age)";
}

std::string fork_server_end(int pid, const std::string& kill_reason, const std::string& how,
                            bool was_starting, time_point started, time_point now,
                            const std::string& log) {
    std::string why = "the fork server (pid " + std::to_string(pid) + ") ";
    const std::string uptime = format_elapsed(started, now);
    if (!kill_reason.empty()) {
        why += kill_reason + ".";
    } else if (was_starting) {
        why += how + " before it was ready, " + uptime + " after it started.";
    } else {
        why += how + " after " + uptime + ".";
    }
    return why + describe_output(log);
}

std::string fork_server_not_started(const std::string& why) {
    return "the fork server could not be started: " + why;
}

}  // namespace torchpool::core
