#include "request_regions.hpp"

namespace torchpool::serve {

namespace json = boost::json;

namespace {

// A whole number >= 0 in `p`'s `key`, if it is there; `what` names it in the error.
std::variant<std::optional<std::uint64_t>, http_error> count_in(const json::object& p,
                                                                std::string_view key,
                                                                const std::string& what) {
    const auto count = byte_count_of(p, key);
    if (!count.valid) {
        return bad_request("parameters." + std::string(key) + " of " + what +
                           " must be a byte count");
    }
    return count.bytes;
}

}  // namespace

byte_count byte_count_of(const json::object& o, std::string_view key) {
    const auto* v = o.if_contains(key);
    if (!v) {
        return {};
    }
    if (v->is_int64() && v->as_int64() >= 0) {
        return {true, static_cast<std::uint64_t>(v->as_int64())};
    }
    if (v->is_uint64()) {
        return {true, v->as_uint64()};
    }
    return {false, std::nullopt};
}

std::variant<std::optional<region_bytes>, http_error> region_of(const json::object* tensor,
                                                                const std::string& what,
                                                                const shm_regions* regions) {
    const auto* params = tensor ? tensor->if_contains("parameters") : nullptr;
    const auto* p = params ? params->if_object() : nullptr;
    if (!p) {
        return std::nullopt;
    }
    const auto* name = p->if_contains("shared_memory_region");
    auto size = count_in(*p, "shared_memory_byte_size", what);
    auto offset = count_in(*p, "shared_memory_offset", what);
    for (auto* wrong : {std::get_if<http_error>(&size), std::get_if<http_error>(&offset)}) {
        if (wrong) {
            return *wrong;
        }
    }
    const auto byte_size = std::get<std::optional<std::uint64_t>>(size);
    if (!name) {
        if (byte_size || std::get<std::optional<std::uint64_t>>(offset)) {
            return bad_request(what +
                               " gives shared-memory parameters but no shared_memory_region");
        }
        return std::nullopt;
    }
    if (!name->is_string()) {
        return bad_request("parameters.shared_memory_region of " + what +
                           " must be a region's name");
    }
    if (!byte_size) {
        return bad_request(what + " names shared-memory region '" + std::string(name->as_string()) +
                           "' but no parameters.shared_memory_byte_size");
    }
    if (!regions) {
        return bad_request(what + " names shared-memory region '" + std::string(name->as_string()) +
                           "', but this server takes none (it was not started with "
                           "--allow-shared-memory)");
    }
    auto region = regions->find(name->as_string());
    if (!region) {
        return bad_request(
            what + " names shared-memory region '" + std::string(name->as_string()) +
            "', which is not registered (POST /v2/systemsharedmemory/region/NAME/register)");
    }
    const auto at = std::get<std::optional<std::uint64_t>>(offset).value_or(0);
    if (auto wrong = region->check(at, *byte_size, what)) {
        return bad_request(*wrong);
    }
    return region_bytes{std::move(region), at, *byte_size};
}

}  // namespace torchpool::serve
