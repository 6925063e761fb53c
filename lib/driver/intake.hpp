// What submit does with a request before the core sees it: checks it, gives it its deadline
// and fingerprint, and encodes it for the wire. Pure: the time and the pool's rules come in as
// values, so that every case has a unit test without a pool.
#pragma once

#include "core/types.hpp"
#include "wire/codec.hpp"
#include <torchpool/task.hpp>

#include <chrono>
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
};

/// A request ready for the core (its options) and for its worker (its frame).
struct taken_request {
    core::task_options options;
    wire::frame frame;
};

/// Task `id` made of `req`, submitted at `now`: ready, or why it is invalid in words (for
/// errc::invalid_request).
std::variant<taken_request, std::string> take_in(core::task_id id, const request& req,
                                                 core::time_point now, const intake_rules& rules);

}  // namespace torchpool::detail
