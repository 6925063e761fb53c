// What submit does with a request before the core sees it, on the submitting thread: checks
// it, gives it its deadline and fingerprint, places its large tensors in the pool's input
// memory (the one copy of their bytes, if the caller did not allocate them there), and
// encodes it for the wire. The time and the pool's rules come in as values, so that every
// case has a unit test without a pool.
#pragma once

#include "core/types.hpp"
#include "shm/arena.hpp"
#include "wire/codec.hpp"
#include <torchpool/task.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <variant>

namespace torchpool::detail {

/// The pool's rules for a request, as the driver reads them from its parameters and core.
struct intake_rules {
    /// The deadline of a request that gives none (pool_params::task_timeout; 0: none).
    std::chrono::milliseconds default_timeout{0};
    /// The core wants the request's fingerprint (for poison tasks and their quarantine).
    bool fingerprint = false;
    /// Requests may carry faults to inject (pool_params::faults.enabled).
    bool faults_enabled = false;
    /// The pool's input memory; null: every tensor goes inline.
    shm::arena* inputs = nullptr;
    /// Tensors of the caller's own bytes smaller than this go inline.
    std::size_t inline_below = 0;
};

/// A request ready for the core (its options) and for its worker (its frame).
struct taken_request {
    core::task_options options;
    /// Shared from the start: the pool keeps it for retries and the worker's outbox sends it,
    /// and moving a pointer costs less than moving the frame.
    std::shared_ptr<const wire::gathered_frame> frame;
    /// The tensors the frame places in input memory, kept until the task ends (a retry
    /// sends the same frame).
    std::vector<shared_bytes> placed;
    /// Tensors that go inline; of them, large ones that found the input memory full.
    std::size_t inline_tensors = 0;
    std::size_t found_memory_full = 0;
};

/// Task `id` made of `req`, submitted at `now`: ready, or why it is invalid in words (for
/// errc::invalid_request). Tensors it places in input memory leave `req` for `placed`.
std::variant<taken_request, std::string> take_in(core::task_id id, request& req,
                                                 core::time_point now, const intake_rules& rules);

}  // namespace torchpool::detail
