#include "endpoints.hpp"

#include "http_rules.hpp"
#include "oip.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace torchpool::serve {

namespace asio = boost::asio;
namespace http = boost::beast::http;

asio::awaitable<reply> endpoints::answer(http_request req, asio::ip::tcp::socket& client) {
    auto route = resolve(req.method_string(), origin_form(req.target()));
    if (auto* refused = std::get_if<route_refusal>(&route)) {
        reply r{static_cast<http::status>(refused->status), error_json(refused->message)};
        r.allow = refused->allow;
        if (refused->matched && refused->matched->which == endpoint::model_infer) {
            if (auto m = model_of(*refused->matched); std::holds_alternative<served_model*>(m)) {
                r.model = std::get<served_model*>(m)->config.name;  // a 405 of its /infer
            }
        }
        co_return r;
    }
    const auto& path = std::get<route_match>(route);
    switch (path.which) {
        case endpoint::server_metadata:
            co_return server_metadata();
        case endpoint::server_live:
            co_return server_live();
        case endpoint::server_ready:
            co_return server_ready();
        case endpoint::metrics:
            // The pools' stats are read where the pools run.
            co_return co_await asio::co_spawn(
                supervisor_, [this]() -> asio::awaitable<reply> { co_return metrics(); },
                asio::use_awaitable);
        case endpoint::shm_status:
            co_return shm_status(path);
        case endpoint::shm_register:
            co_return shm_register(path, req);
        case endpoint::shm_unregister:
            co_return shm_unregister(path);
        default:
            break;
    }
    auto found = model_of(path);
    if (auto* missing = std::get_if<reply>(&found)) {
        co_return std::move(*missing);
    }
    auto& model = *std::get<served_model*>(found);
    switch (path.which) {
        case endpoint::model_metadata:
            co_return model_metadata(model);
        case endpoint::model_ready:
            co_return model_ready(model);
        default:
            co_return co_await infer(model, std::move(req), client);
    }
}

std::variant<served_model*, reply> endpoints::model_of(const route_match& path) {
    for (auto& m : models_) {
        if (m.config.name != path.model) {
            continue;
        }
        if (path.version && *path.version != m.config.version) {
            return reply{
                http::status::not_found,
                error_json("model '" + m.config.name + "' has no version '" +
                           std::string(*path.version) + "'; it has version " + m.config.version)};
        }
        return &m;
    }
    return reply{http::status::not_found,
                 error_json("no model named '" + std::string(path.model) + "' is served")};
}

reply endpoints::server_metadata() const {
    return {http::status::ok, server_metadata_json(limits_.shared_memory)};
}

reply endpoints::server_live() const {
    return {http::status::ok, R"({"live":true})"};
}

reply endpoints::server_ready() const {
    bool ready = !draining_;
    for (const auto& m : models_) {
        ready = ready && m.workers->health().ready;
    }
    return {ready ? http::status::ok : http::status::service_unavailable,
            ready ? R"({"ready":true})" : R"({"ready":false})"};
}

reply endpoints::metrics() const {
    reply r{http::status::ok, metrics_.scrape()};
    r.content_type = "text/plain; version=0.0.4";
    return r;
}

reply endpoints::model_metadata(const served_model& m) const {
    return {http::status::ok, model_metadata_json(m.config)};
}

reply endpoints::model_ready(const served_model& m) const {
    const bool ready = !draining_ && m.workers->health().ready;
    return {ready ? http::status::ok : http::status::service_unavailable,
            model_ready_json(m.config, ready)};
}

}  // namespace torchpool::serve
