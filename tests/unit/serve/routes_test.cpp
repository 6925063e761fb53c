// The server's route table: which endpoint a verb and a target reach, and the 404s and 405s.
#include "routes.hpp"

#include <catch2/catch.hpp>

using namespace torchpool::serve;

namespace {

route_match reaches(std::string_view method, std::string_view target) {
    auto r = resolve(method, target);
    INFO(method << " " << target);
    REQUIRE(std::holds_alternative<route_match>(r));
    return std::get<route_match>(r);
}

route_refusal refused(std::string_view method, std::string_view target) {
    auto r = resolve(method, target);
    INFO(method << " " << target);
    REQUIRE(std::holds_alternative<route_refusal>(r));
    return std::get<route_refusal>(r);
}

}  // namespace

TEST_CASE("every endpoint of the table is reached by its verb", "[serve][routes]") {
    CHECK(reaches("GET", "/v2").which == endpoint::server_metadata);
    CHECK(reaches("GET", "/v2/health/live").which == endpoint::server_live);
    CHECK(reaches("GET", "/v2/health/ready").which == endpoint::server_ready);
    CHECK(reaches("GET", "/metrics").which == endpoint::metrics);
    auto m = reaches("GET", "/v2/models/fashion");
    CHECK(m.which == endpoint::model_metadata);
    CHECK(m.model == "fashion");
    CHECK_FALSE(m.version);
    m = reaches("GET", "/v2/models/fashion/versions/7");
    CHECK(m.which == endpoint::model_metadata);
    CHECK(m.version == "7");
    CHECK(reaches("GET", "/v2/models/fashion/ready").which == endpoint::model_ready);
    m = reaches("GET", "/v2/models/fashion/versions/1/ready");
    CHECK(m.which == endpoint::model_ready);
    CHECK(m.version == "1");
    m = reaches("POST", "/v2/models/fashion/infer");
    CHECK(m.which == endpoint::model_infer);
    CHECK(m.model == "fashion");
    m = reaches("POST", "/v2/models/fashion/versions/1/infer");
    CHECK(m.which == endpoint::model_infer);
    CHECK(m.version == "1");
    // Triton's system shared-memory extension.
    m = reaches("GET", "/v2/systemsharedmemory/status");
    CHECK(m.which == endpoint::shm_status);
    CHECK_FALSE(m.region);
    m = reaches("GET", "/v2/systemsharedmemory/region/in0/status");
    CHECK(m.which == endpoint::shm_status);
    CHECK(m.region == "in0");
    m = reaches("POST", "/v2/systemsharedmemory/region/in0/register");
    CHECK(m.which == endpoint::shm_register);
    CHECK(m.region == "in0");
    CHECK(reaches("POST", "/v2/systemsharedmemory/region/in0/unregister").which ==
          endpoint::shm_unregister);
    m = reaches("POST", "/v2/systemsharedmemory/unregister");
    CHECK(m.which == endpoint::shm_unregister);
    CHECK_FALSE(m.region);
    CHECK(refused("GET", "/v2/systemsharedmemory/region/in0/register").status == 405);
}

TEST_CASE("HEAD reaches whatever GET reaches, and nothing else", "[serve][routes]") {
    for (const auto& r : route_table()) {
        if (r.method != "GET" || r.pattern.find('{') != std::string_view::npos) {
            continue;
        }
        CHECK(reaches("HEAD", r.pattern).which == r.which);
    }
    CHECK(reaches("HEAD", "/v2/models/fashion/versions/1").which == endpoint::model_metadata);
    const auto no = refused("HEAD", "/v2/models/fashion/infer");
    CHECK(no.status == 405);
    CHECK(no.allow == "POST");
}

TEST_CASE("a trailing slash and a query are ignored", "[serve][routes]") {
    CHECK(reaches("GET", "/v2/").which == endpoint::server_metadata);
    CHECK(reaches("GET", "/v2/health/ready/").which == endpoint::server_ready);
    CHECK(reaches("GET", "/metrics?name[]=x").which == endpoint::metrics);
    CHECK(reaches("POST", "/v2/models/fashion/infer/?debug=1").model == "fashion");
    CHECK(reaches("GET", "/v2/?x").which == endpoint::server_metadata);
}

TEST_CASE("404: no route has the path", "[serve][routes]") {
    for (const auto* target :
         {"/", "/v1", "/v2x", "/v2/health", "/v2/models", "/v2/models/", "/v2/models//infer",
          "/v2/models/fashion/versions", "/v2/models/fashion/versions//infer",
          "/v2/models/fashion/infer/more", "/metrics/nothing", "//v2", "v2", ""}) {
        const auto no = refused("GET", target);
        CHECK(no.status == 404);
        CHECK(no.allow.empty());
        CHECK_THAT(no.message, Catch::StartsWith("no such endpoint"));
    }
}

TEST_CASE("405: the path exists under other verbs, which Allow lists", "[serve][routes]") {
    auto no = refused("GET", "/v2/models/fashion/infer");
    CHECK(no.status == 405);
    CHECK(no.allow == "POST");
    CHECK_THAT(no.message, Catch::Contains("use POST for /v2/models/fashion/infer"));
    REQUIRE(no.matched);
    CHECK(no.matched->which == endpoint::model_infer);
    CHECK(no.matched->model == "fashion");
    for (const auto* method : {"POST", "PUT", "DELETE", "OPTIONS", "PATCH"}) {
        no = refused(method, "/v2/health/live");
        CHECK(no.status == 405);
        CHECK(no.allow == "GET, HEAD");
    }
    no = refused("DELETE", "/v2/models/fashion/versions/2/ready/");
    CHECK(no.allow == "GET, HEAD");
    CHECK(no.matched->version == "2");
}

TEST_CASE("a table of its own: first match wins, Allow joins the verbs of every match",
          "[serve][routes]") {
    const route table[] = {
        {"GET", "/items/{model}", endpoint::model_metadata},
        {"PUT", "/items/{model}", endpoint::model_infer},
        {"GET", "/items/special", endpoint::metrics},
        {"DELETE", "/items/{model}", endpoint::model_ready},
    };
    CHECK(std::get<route_match>(resolve("GET", "/items/special", table)).which ==
          endpoint::model_metadata);
    CHECK(std::get<route_match>(resolve("PUT", "/items/a", table)).which == endpoint::model_infer);
    const auto no = std::get<route_refusal>(resolve("POST", "/items/a", table));
    CHECK(no.status == 405);
    CHECK(no.allow == "GET, HEAD, PUT, DELETE");
}
