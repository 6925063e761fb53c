#include "routes.hpp"

#include <array>

namespace torchpool::serve {

namespace {

constexpr std::array table{
    route{"GET", "/v2", endpoint::server_metadata},
    route{"GET", "/v2/health/live", endpoint::server_live},
    route{"GET", "/v2/health/ready", endpoint::server_ready},
    route{"GET", "/metrics", endpoint::metrics},
    route{"GET", "/v2/models/{model}", endpoint::model_metadata},
    route{"GET", "/v2/models/{model}/versions/{version}", endpoint::model_metadata},
    route{"GET", "/v2/models/{model}/ready", endpoint::model_ready},
    route{"GET", "/v2/models/{model}/versions/{version}/ready", endpoint::model_ready},
    route{"POST", "/v2/models/{model}/infer", endpoint::model_infer},
    route{"POST", "/v2/models/{model}/versions/{version}/infer", endpoint::model_infer},
    route{"GET", "/v2/systemsharedmemory/status", endpoint::shm_status},
    route{"GET", "/v2/systemsharedmemory/region/{region}/status", endpoint::shm_status},
    route{"POST", "/v2/systemsharedmemory/region/{region}/register", endpoint::shm_register},
    route{"POST", "/v2/systemsharedmemory/region/{region}/unregister", endpoint::shm_unregister},
    route{"POST", "/v2/systemsharedmemory/unregister", endpoint::shm_unregister},
};

// The path alone: no query, and "/v2/" is "/v2".
std::string_view path_of(std::string_view target) {
    if (const auto q = target.find('?'); q != std::string_view::npos) {
        target = target.substr(0, q);
    }
    if (target.size() > 1 && target.back() == '/') {
        target.remove_suffix(1);
    }
    return target;
}

// The next '/'-separated segment of `rest` (which starts with '/'), taken off it.
std::optional<std::string_view> next_segment(std::string_view& rest) {
    if (rest.empty() || rest.front() != '/') {
        return std::nullopt;
    }
    rest.remove_prefix(1);
    const auto end = rest.find('/');
    const auto segment = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
    return segment;
}

std::optional<route_match> match(const route& r, std::string_view path) {
    route_match m{.which = r.which};
    std::string_view pattern = r.pattern;
    while (!pattern.empty()) {
        const auto want = next_segment(pattern);
        const auto got = next_segment(path);
        if (!got) {
            return std::nullopt;
        }
        if (*want == "{model}" || *want == "{version}" || *want == "{region}") {
            if (got->empty()) {
                return std::nullopt;
            }
            if (*want == "{model}") {
                m.model = *got;
            } else {
                (*want == "{version}" ? m.version : m.region).emplace(*got);
            }
        } else if (*want != *got) {
            return std::nullopt;
        }
    }
    if (!path.empty()) {
        return std::nullopt;  // more segments than the pattern
    }
    return m;
}

bool takes(const route& r, std::string_view method) {
    return r.method == method || (method == "HEAD" && r.method == "GET");
}

void add_verbs(std::string& allow, std::string_view method) {
    const std::string verbs = method == "GET" ? "GET, HEAD" : std::string(method);
    if (allow.find(verbs) != std::string::npos) {
        return;
    }
    allow += allow.empty() ? verbs : ", " + verbs;
}

}  // namespace

std::span<const route> route_table() {
    return table;
}

std::variant<route_match, route_refusal> resolve(std::string_view method, std::string_view target,
                                                 std::span<const route> routes) {
    const auto path = path_of(target);
    route_refusal refusal;
    for (const auto& r : routes) {
        auto m = match(r, path);
        if (!m) {
            continue;
        }
        if (takes(r, method)) {
            return *m;
        }
        add_verbs(refusal.allow, r.method);
        if (!refusal.matched) {
            refusal.matched = m;
        }
    }
    if (refusal.allow.empty()) {
        refusal.message = "no such endpoint: " + std::string(path);
    } else {
        refusal.status = 405;
        refusal.message = "use " + refusal.allow + " for " + std::string(path);
    }
    return refusal;
}

}  // namespace torchpool::serve
