#include "params.hpp"

#include "../core/sizing.hpp"

#include <algorithm>
#include <stdexcept>
#include <thread>

#include <sched.h>

namespace torchpool::detail {

std::size_t usable_cores() {
    cpu_set_t set;
    if (::sched_getaffinity(0, sizeof set, &set) == 0) {
        return static_cast<std::size_t>(std::max(1, CPU_COUNT(&set)));
    }
    return std::max(1u, std::thread::hardware_concurrency());
}

std::vector<std::string> worker_environment(const pool_params& params, std::size_t cores) {
    const std::string intra = std::to_string(params.intra_op_threads);
    std::vector<std::string> env = {
        "TORCHPOOL_INTRA_OP_THREADS=" + intra,
        "TORCHPOOL_INTER_OP_THREADS=" + std::to_string(params.inter_op_threads),
        // Read by OpenMP and MKL when they load, before any code of the worker runs.
        "OMP_NUM_THREADS=" + intra, "MKL_NUM_THREADS=" + intra};
    if (params.worker.start == start_mode::fork_server) {
        env.push_back("TORCHPOOL_FORK_SERVER=1");
        // Forking a process as large as LibTorch takes milliseconds: the server gets a
        // helper per further core, so that a burst of starts uses every core.
        env.push_back("TORCHPOOL_FORK_SERVER_HELPERS=" + std::to_string(cores - 1));
    }
    if (params.faults.enabled) {
        env.push_back("TORCHPOOL_FAULT_INJECTION=1");  // the SDK ignores faults without it
    }
    const auto& shared = params.shared_memory;
    if (shared.input_bytes > 0) {
        env.push_back("TORCHPOOL_OUTPUT_BYTES=" + std::to_string(shared.worker_output_bytes));
        env.push_back("TORCHPOOL_INLINE_BELOW=" + std::to_string(shared.inline_below));
    }
    if (params.memory.limit_address_space && params.memory.hard_limit_bytes > 0) {
        // Applied by the worker SDK to each worker (not to the fork server). The shared
        // memory a worker maps is address space too, though not its own to spend.
        const std::uint64_t mapped =
            shared.input_bytes > 0 ? shared.input_bytes + shared.worker_output_bytes : 0;
        env.push_back("TORCHPOOL_ADDRESS_SPACE_LIMIT=" +
                      std::to_string(params.memory.hard_limit_bytes + mapped));
    }
    return env;
}

std::uint64_t descriptors_needed(const pool_params& params, std::size_t cores) {
    // The input memory's memfd, then each worker's pidfd, channel and log pipe.
    std::uint64_t n = 1 + 3 * core::slot_capacity(params);
    if (params.worker.start == start_mode::fork_server) {
        n += 3 + cores;
    }
    return n;
}

pool_params resolve(pool_params params, std::size_t cores) {
    if (params.worker.executable.empty()) {
        throw std::invalid_argument(
            "torchpool::pool: pool_params::worker::executable is empty; set it to the path of "
            "a worker program");
    }
    if (params.workers == 0) {
        throw std::invalid_argument("torchpool::pool: pool_params::workers must be at least 1");
    }
    if (params.min_workers > params.workers ||
        (params.max_workers > 0 && params.max_workers < params.workers)) {
        throw std::invalid_argument(
            "torchpool::pool: pool_params::min_workers (" + std::to_string(params.min_workers) +
            ") <= workers (" + std::to_string(params.workers) + ") <= max_workers (" +
            std::to_string(params.max_workers) + ") must hold (zero means: equal to workers)");
    }
    if (params.memory.soft_limit_bytes > 0 && params.memory.hard_limit_bytes > 0 &&
        params.memory.soft_limit_bytes >= params.memory.hard_limit_bytes) {
        throw std::invalid_argument(
            "torchpool::pool: pool_params::memory.soft_limit_bytes must be below "
            "hard_limit_bytes (or one of them zero)");
    }
    if (params.faults.choose && !params.faults.enabled) {
        throw std::invalid_argument(
            "torchpool::pool: pool_params::faults.choose is set but faults.enabled is false; "
            "enable fault injection (in tests only) or leave choose empty");
    }
    if (params.queue_limit == 0) {
        throw std::invalid_argument("torchpool::pool: pool_params::queue_limit must be at least 1");
    }
    if (params.max_frame_bytes < 1024) {
        throw std::invalid_argument(
            "torchpool::pool: pool_params::max_frame_bytes must be at least 1024");
    }
    const auto per_worker = static_cast<unsigned>(std::max<std::size_t>(1, cores / params.workers));
    if (params.intra_op_threads == 0) {
        params.intra_op_threads = per_worker;
    }
    if (params.inter_op_threads == 0) {
        params.inter_op_threads = per_worker;
    }
    if (params.max_concurrent_starts == 0) {
        params.max_concurrent_starts = std::max<std::size_t>(4, 2 * cores);
    }
    return params;
}

}  // namespace torchpool::detail
