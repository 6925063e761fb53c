// What /proc says about a live child process: its memory, and what it is doing in the kernel.
// Only for a child not yet reaped, whose pid cannot have been reused. Each read is a few
// short reads of kernel-generated text, cheap enough for the pool's thread.
#pragma once

#include <torchpool/task.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace torchpool::posix {

/// The memory of process `pid` (/proc/PID/smaps_rollup), or nullopt.
/// Cheap (the kernel sums every mapping): it may count as private the pages of tensor shared
/// memory that only this worker maps yet (results it wrote that the host has not read).
std::optional<torchpool::worker_memory> read_memory(int pid);
/// The same, with tensor shared memory told apart (/proc/PID/smaps, mapping by mapping: a
/// few ms for a LibTorch process): not in private_bytes, and in shared_memory_bytes.
std::optional<torchpool::worker_memory> read_memory_exactly(int pid);

/// What the mappings of tensor shared memory are named in /proc/PID/maps: the memfds of the
/// pool's input memory and of each worker's output memory ("/memfd:torchpool-...").
inline constexpr const char* tensor_memory_path = "/memfd:torchpool-";

/// Its state letter, wait channel, system call and kernel stack (/proc/PID/stat, wchan,
/// syscall, stack), or nullopt if it is gone. Fields the kernel hides are left empty.
std::optional<torchpool::worker_activity> read_activity(int pid);

/// The CPU time process `pid` has used, user and system (/proc/PID/stat), or nullopt if it
/// is gone.
std::optional<std::chrono::nanoseconds> read_cpu_time(int pid);

/// MemAvailable from /proc/meminfo: what the machine can give new processes without
/// swapping, in bytes; nullopt if unreadable.
std::optional<std::uint64_t> available_memory();

/// The share (%) of the last 10 s in which every task of the machine waited for memory
/// (/proc/pressure/memory, "full avg10"); nullopt where the kernel has no PSI.
std::optional<double> memory_pressure();

/// The name of system call `number` on this architecture, for the common blocking ones
/// ("read", "futex", ...); empty for others.
const char* syscall_name(long number) noexcept;

/// In kernel-formatted text ("MemAvailable:  123 kB", "oom_kill 2", "full avg10=0.00"): where
/// the value after the first `key` begins, or null if `key` is not there.
const char* value_after(const char* text, const char* key) noexcept;
/// The whole number after the first `key`, or nullopt.
std::optional<std::uint64_t> count_after(const char* text, const char* key) noexcept;

/// The whole of a small /proc or /sys file, or nullopt if it cannot be opened.
std::optional<std::string> read_small_file(const std::string& path);

}  // namespace torchpool::posix
