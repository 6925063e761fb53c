// /v2/systemsharedmemory/...: Triton's system shared-memory extension. A client registers a
// region of a POSIX shared-memory object it made (its key, an offset and a size), sees the
// regions' status, and unregisters them; its infer requests then name regions for inputs and
// outputs (infer_request.cpp, infer_response.cpp).
#include "endpoints.hpp"
#include "oip.hpp"
#include "request_regions.hpp"

#include <boost/json.hpp>

namespace torchpool::serve {

namespace http = boost::beast::http;
namespace json = boost::json;

namespace {

reply refused(http::status status, const std::string& why) {
    return {status, error_json(why)};
}

reply not_allowed() {
    return refused(http::status::forbidden,
                   "shared-memory regions are off on this server; start it with "
                   "--allow-shared-memory to let clients on its host register them");
}

// A whole number >= 0 in `o`'s `key`, if there; an error naming it otherwise.
std::variant<std::optional<std::uint64_t>, std::string> count_in(const json::object& o,
                                                                 std::string_view key) {
    const auto count = byte_count_of(o, key);
    if (!count.valid) {
        return "\"" + std::string(key) + "\" must be a whole number of bytes, 0 or more";
    }
    return count.bytes;
}

}  // namespace

reply endpoints::shm_status(const route_match& path) const {
    if (!limits_.shared_memory) {
        return not_allowed();
    }
    if (!path.region) {
        return {http::status::ok, shm_status_json(regions_.list())};
    }
    auto region = regions_.find(*path.region);
    if (!region) {
        return refused(http::status::not_found, "no shared-memory region named '" +
                                                    std::string(*path.region) + "' is registered");
    }
    return {http::status::ok, shm_status_json({region})};
}

reply endpoints::shm_register(const route_match& path, const http_request& req) {
    if (!limits_.shared_memory) {
        return not_allowed();
    }
    const std::string name(path.region.value_or(""));
    boost::system::error_code ec;
    const auto body = json::parse(req.body().text, ec);
    const auto* o = ec ? nullptr : body.if_object();
    if (!o) {
        return refused(http::status::bad_request,
                       "the body of a region's registration must be a JSON object "
                       "{\"key\": ..., \"offset\": ..., \"byte_size\": ...}");
    }
    const auto* key = o->if_contains("key");
    if (!key || !key->is_string()) {
        return refused(http::status::bad_request,
                       "the registration of region '" + name +
                           "' needs \"key\": the name of a POSIX shared-memory object");
    }
    auto offset = count_in(*o, "offset");
    auto byte_size = count_in(*o, "byte_size");
    for (auto* wrong : {std::get_if<std::string>(&offset), std::get_if<std::string>(&byte_size)}) {
        if (wrong) {
            return refused(http::status::bad_request, *wrong);
        }
    }
    const auto size = std::get<std::optional<std::uint64_t>>(byte_size);
    if (!size) {
        return refused(http::status::bad_request,
                       "the registration of region '" + name + "' needs \"byte_size\"");
    }
    if (auto wrong =
            regions_.add(name, key->as_string(),
                         std::get<std::optional<std::uint64_t>>(offset).value_or(0), *size)) {
        return refused(http::status::bad_request, *wrong);
    }
    return {http::status::ok, "{}"};
}

reply endpoints::shm_unregister(const route_match& path) {
    if (!limits_.shared_memory) {
        return not_allowed();
    }
    // Idempotent, as a client retrying it expects: a region that is not there is unregistered.
    // Requests holding a region finish with it.
    if (path.region) {
        regions_.remove(*path.region);
    } else {
        regions_.clear();
    }
    return {http::status::ok, "{}"};
}

}  // namespace torchpool::serve
