#include "intake.hpp"

namespace torchpool::detail {

namespace {

// Why `req` cannot be run, or empty.
std::string invalid(const request& req, const intake_rules& rules) {
    if (req.method.empty()) {
        return "The request has no method name; set request::method to the name of a handler "
               "the worker registered.";
    }
    for (std::size_t i = 0; i < req.tensors.size(); ++i) {
        if (auto problem = wire::validate_tensor(req.tensors[i]); !problem.empty()) {
            return "Tensor " + std::to_string(i) + " of the request " + problem + ".";
        }
    }
    if (req.inject && !rules.faults_enabled) {
        return "The request carries a fault to inject (" + describe_fault(req.inject) +
               "), but fault injection is off; set pool_params::faults.enabled in tests.";
    }
    return {};
}

}  // namespace

std::variant<taken_request, std::string> take_in(core::task_id id, const request& req,
                                                 core::time_point now, const intake_rules& rules) {
    if (auto why = invalid(req, rules); !why.empty()) {
        return why;
    }
    const auto timeout = req.timeout.count() > 0 ? req.timeout : rules.default_timeout;
    // steady_clock is CLOCK_MONOTONIC on Linux, the clock the worker compares with.
    const std::uint64_t deadline_ns =
        timeout.count() > 0
            ? static_cast<std::uint64_t>(
                  std::chrono::nanoseconds((now + timeout).time_since_epoch()).count())
            : 0;
    return taken_request{.options = {.timeout = timeout,
                                     .retries = req.retries,
                                     .priority = static_cast<std::uint8_t>(req.priority),
                                     .wait_for_room = req.if_full == when_full::wait,
                                     .fingerprint = rules.fingerprint ? fingerprint(req) : 0},
                         .frame = wire::encode_request(id, deadline_ns, req)};
}

}  // namespace torchpool::detail
