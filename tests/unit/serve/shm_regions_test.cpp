// Triton's system shared-memory extension without HTTP: registering regions of real POSIX
// shared-memory objects, reading inputs from them and writing outputs into them through the
// request parser and the response writer, and every bad registration or reference refused
// with its reason; a region whose object shrinks under a request is a 400, not a SIGBUS.
#include "shm_regions.hpp"

#include "images_model.hpp"
#include "oip.hpp"

#include <boost/json.hpp>

#include <catch2/catch.hpp>

#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

using namespace torchpool;
using namespace torchpool::serve;
namespace json = boost::json;

namespace {

// A POSIX shared-memory object of `bytes`, unlinked when the test ends.
struct shm_object {
    explicit shm_object(std::size_t bytes)
        : key("/torchpool-test-" + std::to_string(::getpid()) + "-" + std::to_string(++made)) {
        fd = ::shm_open(key.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
        REQUIRE(fd >= 0);
        REQUIRE(::ftruncate(fd, static_cast<off_t>(bytes)) == 0);
    }
    ~shm_object() {
        ::close(fd);
        ::shm_unlink(key.c_str());
    }
    void put(std::size_t at, const void* bytes, std::size_t n) const {
        REQUIRE(::pwrite(fd, bytes, n, static_cast<off_t>(at)) == static_cast<ssize_t>(n));
    }
    std::string get(std::size_t at, std::size_t n) const {
        std::string out(n, '\0');
        REQUIRE(::pread(fd, out.data(), n, static_cast<off_t>(at)) == static_cast<ssize_t>(n));
        return out;
    }
    static inline int made = 0;
    std::string key;
    int fd = -1;
};

using test::images_model;

std::string input_in(const std::string& region, std::size_t offset, std::size_t bytes,
                     const std::string& extra = "") {
    return R"({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 2, 2],)"
           R"( "parameters": {"shared_memory_region": ")" +
           region + R"(", "shared_memory_offset": )" + std::to_string(offset) +
           R"(, "shared_memory_byte_size": )" + std::to_string(bytes) + "}" + extra + "}]";
}

std::string error_of(const std::string& body, const shm_regions& regions) {
    auto parsed = parse_infer_request(body, images_model(), std::nullopt,
                                      json_reading::fast_when_possible, &regions);
    auto* e = std::get_if<http_error>(&parsed);
    return e ? e->message : "";
}

}  // namespace

TEST_CASE("a region is registered only over an object that holds it", "[serve][shm]") {
    shm_object object(4096);
    shm_regions regions;
    CHECK(regions.add("in", object.key, 1024, 2048) == std::nullopt);
    CHECK(regions.size() == 1);
    CHECK_THAT(regions.add("in", object.key, 0, 16).value_or(""),
               Catch::Contains("already registered"));
    CHECK_THAT(
        regions.add("big", object.key, 1024, 4096).value_or(""),
        Catch::Contains("asks for 4096 bytes at offset 1024") && Catch::Contains("has 4096"));
    CHECK_THAT(regions.add("gone", "/torchpool-no-such-object", 0, 16).value_or(""),
               Catch::Contains("cannot open the shared-memory object"));
    CHECK_THAT(regions.add("path", "/dev/../etc/passwd", 0, 16).value_or(""),
               Catch::Contains("must name a POSIX shared-memory object"));
    CHECK_THAT(regions.add("empty", object.key, 0, 0).value_or(""),
               Catch::Contains("must be at least 1"));
    CHECK_THAT(regions.add("", object.key, 0, 16).value_or(""), Catch::Contains("name"));
    CHECK(regions.size() == 1);
    const auto in = regions.find("in");
    REQUIRE(in);
    CHECK(in->key() == object.key);
    CHECK(in->offset() == 1024);
    CHECK(in->byte_size() == 2048);
    const auto status = json::parse(shm_status_json(regions.list())).as_array();
    REQUIRE(status.size() == 1);
    CHECK(status[0].as_object().at("name") == "in");
    CHECK(status[0].as_object().at("byte_size").as_int64() == 2048);
    // Unregistered, it stays whole for whoever holds it.
    CHECK(regions.remove("in"));
    CHECK_FALSE(regions.remove("in"));
    CHECK(regions.find("in") == nullptr);
    CHECK(in->check(0, 2048, "input") == std::nullopt);
}

TEST_CASE("an input is read from the region it names, at its offset", "[serve][shm]") {
    shm_object object(4096);
    const float values[4] = {0.25f, 0.5f, 1.0f, 2.0f};
    object.put(1024 + 64, values, sizeof values);
    shm_regions regions;
    REQUIRE(regions.add("in", object.key, 1024, 1024) == std::nullopt);
    auto parsed = parse_infer_request(input_in("in", 64, 16) + "}", images_model(), std::nullopt,
                                      json_reading::fast_when_possible, &regions);
    REQUIRE(std::holds_alternative<infer_request>(parsed));
    const auto& req = std::get<infer_request>(parsed);
    REQUIRE(req.inputs.size() == 1);
    REQUIRE(req.inputs[0].data.size() == sizeof values);
    CHECK(std::memcmp(req.inputs[0].data.data(), values, sizeof values) == 0);
}

TEST_CASE("a bad reference to a region is a 400 that names it", "[serve][shm]") {
    shm_object object(4096);
    shm_regions regions;
    REQUIRE(regions.add("in", object.key, 0, 64) == std::nullopt);
    CHECK_THAT(error_of(input_in("nope", 0, 16) + "}", regions),
               Catch::Contains("names shared-memory region 'nope', which is not registered"));
    CHECK_THAT(error_of(input_in("in", 56, 16) + "}", regions),
               Catch::Contains("needs 16 bytes at offset 56 of shared-memory region 'in', "
                               "which has 64"));
    CHECK_THAT(error_of(input_in("in", 0, 12) + "}", regions),
               Catch::Contains("takes 16 bytes, but its parameters.shared_memory_byte_size is 12"));
    CHECK_THAT(error_of(input_in("in", 0, 16, R"(, "data": [1, 2, 3, 4])") + "}", regions),
               Catch::Contains("also gives its data"));
    CHECK_THAT(
        error_of(R"({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 2, 2],)"
                 R"( "parameters": {"shared_memory_region": "in"}}]})",
                 regions),
        Catch::Contains("but no parameters.shared_memory_byte_size"));
    CHECK_THAT(error_of(input_in("in", 0, 16) + R"(, "outputs": [{"name": "logits", )"
                                                R"("parameters": {"shared_memory_region": "in", )"
                                                R"("shared_memory_byte_size": 4096}}]})",
                        regions),
               Catch::Contains("output 'logits' needs 4096 bytes at offset 0"));
    // A server started without regions says so.
    auto parsed = parse_infer_request(input_in("in", 0, 16) + "}", images_model());
    REQUIRE(std::holds_alternative<http_error>(parsed));
    CHECK(std::get<http_error>(parsed).status == 400);
    CHECK_THAT(std::get<http_error>(parsed).message, Catch::Contains("--allow-shared-memory"));
}

TEST_CASE("an object shrunk under its region is a 400, never a SIGBUS", "[serve][shm]") {
    shm_object object(4096);
    shm_regions regions;
    REQUIRE(regions.add("in", object.key, 0, 4096) == std::nullopt);
    REQUIRE(::ftruncate(object.fd, 8) == 0);  // the client shrinks it after registering
    CHECK_THAT(error_of(input_in("in", 1024, 16) + "}", regions),
               Catch::Contains("could not be read whole") && Catch::Contains("was shrunk"));
    const auto region = regions.find("in");
    const std::byte bytes[16] = {};
    CHECK_THAT(region->write(1024, bytes, "output 'logits'").value_or(""),
               Catch::Contains("is no longer whole"));
    CHECK(::lseek(object.fd, 0, SEEK_END) == 8);  // and not grown back by the write
}

TEST_CASE("an output named for a region is written there, and the response says where",
          "[serve][shm]") {
    shm_object object(4096);
    shm_regions regions;
    REQUIRE(regions.add("out", object.key, 512, 1024) == std::nullopt);
    const std::string body =
        R"({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 2, 2],)"
        R"( "data": [0, 0, 0, 0]}], "outputs": [{"name": "logits", "parameters": )"
        R"({"shared_memory_region": "out", "shared_memory_offset": 8,)"
        R"( "shared_memory_byte_size": 64}}, {"name": "label"}]})";
    auto parsed = parse_infer_request(body, images_model(), std::nullopt,
                                      json_reading::fast_when_possible, &regions);
    REQUIRE(std::holds_alternative<infer_request>(parsed));
    auto& req = std::get<infer_request>(parsed);
    REQUIRE(req.output_regions.size() == 1);
    // Unregistering now does not pull the region from under the request.
    CHECK(regions.remove("out"));
    const float logits[3] = {1.5f, -2.0f, 0.25f};
    std::vector<tensor> results;
    results.emplace_back(dtype::float32, std::vector<std::int64_t>{1, 3},
                         std::string(reinterpret_cast<const char*>(logits), sizeof logits));
    const std::int64_t label = 0;
    results.emplace_back(dtype::int64, std::vector<std::int64_t>{1},
                         std::string(reinterpret_cast<const char*>(&label), sizeof label));
    auto encoded = infer_response(images_model(), req, results);
    REQUIRE(std::holds_alternative<encoded_response>(encoded));
    const auto response = json::parse(std::get<encoded_response>(encoded).body).as_object();
    const auto& out = response.at("outputs").as_array()[0].as_object();
    CHECK(out.at("name") == "logits");
    CHECK_FALSE(out.contains("data"));
    const auto& p = out.at("parameters").as_object();
    CHECK(p.at("shared_memory_region") == "out");
    CHECK(p.at("shared_memory_byte_size").as_int64() == 12);
    CHECK(object.get(512 + 8, sizeof logits) ==
          std::string(reinterpret_cast<const char*>(logits), sizeof logits));
    CHECK(response.at("outputs").as_array()[1].as_object().contains("data"));

    // An output larger than the bytes its request gave it is refused.
    req.output_regions[0].byte_size = 8;
    auto too_big = infer_response(images_model(), req, results);
    REQUIRE(std::holds_alternative<http_error>(too_big));
    CHECK_THAT(std::get<http_error>(too_big).message,
               Catch::Contains("has 12 bytes, more than its parameters.shared_memory_byte_size "
                               "of 8"));
}
