// The server's route table: a verb and a path pattern to each endpoint of the Open Inference
// Protocol (and /metrics). 404, 405 and HEAD are decided here, in one place, for every
// endpoint: HEAD is served wherever GET is, a query and a trailing slash are ignored, a path
// that exists under another verb gets 405 with the verbs it takes. Sans-io: strings in,
// a decision out.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace torchpool::serve {

enum class endpoint {
    server_metadata,  // GET /v2
    server_live,      // GET /v2/health/live
    server_ready,     // GET /v2/health/ready
    metrics,          // GET /metrics (Prometheus)
    model_metadata,   // GET /v2/models/{model}[/versions/{version}]
    model_ready,      // GET /v2/models/{model}[/versions/{version}]/ready
    model_infer,      // POST /v2/models/{model}[/versions/{version}]/infer
    // Triton's system shared-memory extension:
    shm_status,      // GET /v2/systemsharedmemory[/region/{region}]/status
    shm_register,    // POST /v2/systemsharedmemory/region/{region}/register
    shm_unregister,  // POST /v2/systemsharedmemory[/region/{region}]/unregister
};

/// One line of the table. `pattern`: segments separated by '/'; `{model}`, `{version}` and
/// `{region}` match one non-empty segment each.
struct route {
    std::string_view method;
    std::string_view pattern;
    endpoint which;
};

/// The server's table.
std::span<const route> route_table();

/// What the path named: the endpoint and the segments it captured (views into the target).
struct route_match {
    endpoint which = endpoint::server_metadata;
    std::string_view model;                   // empty for the server's own endpoints
    std::optional<std::string_view> version;  // when the path names one
    std::optional<std::string_view> region;   // a shared-memory region, when the path names one
};

/// 404 (no route has this path) or 405 (routes have it, under other verbs).
struct route_refusal {
    unsigned status = 404;
    std::string message;
    std::string allow;                   // for 405, e.g. "GET, HEAD"
    std::optional<route_match> matched;  // for 405: what the path named under another verb
};

/// The route of `method` and an origin-form `target` in `table`: the first line whose verb
/// and pattern match (HEAD takes GET's lines), or the refusal.
std::variant<route_match, route_refusal> resolve(std::string_view method, std::string_view target,
                                                 std::span<const route> table = route_table());

}  // namespace torchpool::serve
