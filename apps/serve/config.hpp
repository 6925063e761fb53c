// torchpool-serve's command line: what to serve and how, as options.
#pragma once

#include "http_limits.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace torchpool::serve {

struct server_options {
    std::string host = "127.0.0.1";
    unsigned short port = 8000;
    /// NAME=PATH of each model.
    std::vector<std::string> models;
    std::string worker;
    bool stock_worker = true;  // the LibTorch worker of this package
    std::size_t workers = 0;   // per model; 0: one per core
    std::size_t queue_limit = 1024;
    std::uint64_t soft_memory_mib = 0;
    std::uint64_t hard_memory_mib = 0;
    std::size_t max_batch = 32;
    std::chrono::microseconds batch_delay{200};
    std::chrono::milliseconds drain_timeout{20'000};
    /// Threads for HTTP (sessions, parsing, writing responses); 0: on the thread that
    /// supervises the pools. Unset: the cores the workers leave free (http_threads_for).
    std::optional<std::size_t> http_threads;
    http_limits limits;
};

/// The default number of HTTP threads: the cores `workers` (of all models) leave free, at most
/// 8; 0 when they take every core (HTTP then shares the supervising thread).
std::size_t http_threads_for(std::size_t workers, std::size_t cores);

/// The options of `argv`, defaults filled in (the default model and worker beside this
/// program, or those of its build). On --help or an error: the exit code, the text printed.
std::variant<server_options, int> parse_options(int argc, char** argv);

}  // namespace torchpool::serve
