#include "intake.hpp"

#include <cstring>

namespace torchpool::detail {

namespace {

// Why `req` cannot be run, or empty.
std::string invalid(const request& req, const intake_rules& rules) {
    if (req.method.empty()) {
        return "The request has no method name; set request::method to the name of a handler "
               "the worker registered.";
    }
    for (std::size_t i = 0; i < req.tensors.size(); ++i) {
        if (req.tensors[i].shared && !req.tensors[i].data.empty()) {
            return "Tensor " + std::to_string(i) +
                   " of the request has bytes both in shared memory (tensor::shared) and in "
                   "tensor::data; give them in one place.";
        }
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

// Puts each tensor in the input memory, unless it is small or already there: then its
// bytes go inline. A large tensor that finds the memory full goes inline too.
void place(std::vector<tensor>& tensors, const intake_rules& rules, taken_request& taken) {
    for (auto& t : tensors) {
        if (rules.inputs && detail::offset_in(t.shared, rules.inputs)) {
            taken.placed.push_back(t.shared);
            continue;
        }
        const auto bytes = t.bytes();
        if (rules.inputs && bytes.size() >= rules.inline_below && !bytes.empty()) {
            if (auto block = rules.inputs->allocate(bytes.size())) {
                std::memcpy(block->data(), bytes.data(), bytes.size());
                t.shared = block->bytes(block);
                t.data = std::string();
                taken.placed.push_back(t.shared);
                continue;
            }
            ++taken.found_memory_full;
        }
        ++taken.inline_tensors;
    }
}

}  // namespace

std::variant<taken_request, std::string> take_in(core::task_id id, request& req,
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
    taken_request taken{.options = {.timeout = timeout,
                                    .retries = req.retries,
                                    .priority = static_cast<std::uint8_t>(req.priority),
                                    .wait_for_room = req.if_full == when_full::wait,
                                    .fingerprint = rules.fingerprint ? fingerprint(req) : 0}};
    place(req.tensors, rules, taken);
    taken.frame = std::make_shared<const wire::gathered_frame>(
        wire::encode_request(id, deadline_ns, req, rules.inputs));
    return taken;
}

}  // namespace torchpool::detail
