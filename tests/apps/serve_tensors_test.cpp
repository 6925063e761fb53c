// torchpool-serve end to end, tensors that do not travel as JSON: Triton's binary tensor data
// and its system shared-memory regions. The real server on a free loopback port, curl, real
// Fashion-MNIST test images, and outputs compared with the same model run in this process.
#include "../../apps/fashion_mnist.hpp"
#include "../process/torch_reference.hpp"
#include "serve_harness.hpp"

#include <boost/json.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <netinet/in.h>
#include <optional>
#include <random>
#include <spawn.h>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

using namespace torchpool;
using namespace serve_test;
namespace json = boost::json;

TEST_CASE("binary tensors (Triton's extension) round trip through curl", "[serve][e2e][binary]") {
    // 4 images: their logits are copied into the response; 2,048: their 80 KiB of logits are
    // written from the worker's output memory, after the JSON.
    const std::size_t n = GENERATE(4, 2048);
    server_process server({});
    const tensor images = test::fashion_test_images(n);
    const std::string header =
        R"({"id": "binary", "inputs": [{"name": "images", "datatype": "FP32",)"
        R"( "shape": [)" +
        std::to_string(n) + R"(, 1, 28, 28], "parameters": {"binary_data_size": )" +
        std::to_string(images.data.size()) + R"(}}], "parameters": {"binary_data_output": true}})";
    const auto dir = std::filesystem::temp_directory_path() /
                     ("torchpool-serve-binary-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "in", std::ios::binary) << header << images.data;
    const std::string command =
        "curl -s -o " + (dir / "out").string() + " -D " + (dir / "headers").string() +
        " -H 'Inference-Header-Content-Length: " + std::to_string(header.size()) +
        "' -H 'Content-Type: application/octet-stream' --data-binary @" + (dir / "in").string() +
        " '" + server.url("/v2/models/fashion/infer") + "'";
    REQUIRE(std::system(command.c_str()) == 0);
    std::stringstream headers, body;
    headers << std::ifstream(dir / "headers").rdbuf();
    body << std::ifstream(dir / "out", std::ios::binary).rdbuf();
    std::filesystem::remove_all(dir);
    INFO("headers: " << headers.str());
    // curl asks a body of megabytes with Expect: 100-continue, and gets the 100 first.
    CHECK_THAT(headers.str(), Catch::StartsWith(n > 4 ? "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"
                                                      : "HTTP/1.1 200"));
    const auto at = headers.str().find("Inference-Header-Content-Length: ");
    REQUIRE(at != std::string::npos);
    const std::size_t json_length = std::stoul(headers.str().substr(at + 33));
    const std::string all = body.str();
    auto v = json::parse(all.substr(0, json_length)).as_object();
    CHECK(v["id"] == "binary");
    auto& out = v["outputs"].as_array()[0].as_object();
    CHECK(out["parameters"].as_object()["binary_data_size"].as_int64() ==
          static_cast<std::int64_t>(n * 10 * 4));
    const std::string raw = all.substr(json_length);
    REQUIRE(raw.size() == n * 10 * sizeof(float));
    const tensor expected = test::run_in_process(TORCHPOOL_DEFAULT_MODEL, "forward", images);
    const auto* want = reinterpret_cast<const float*>(expected.data.data());
    const auto* got = reinterpret_cast<const float*>(raw.data());
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < n * 10; ++i) {
        wrong += std::abs(got[i] - want[i]) >= 1e-4;
    }
    CHECK(wrong == 0);
    // The images were placed in the pool's input memory as they were read, and reached the
    // worker from there: none went inline in a message, not even 4 images (12 KiB), which a
    // tensor of the server's own bytes would have.
    const std::string metrics = curl("GET", server.url("/metrics")).body;
    CHECK_THAT(metrics,
               Catch::Contains(R"(torchpool_tensors_total{model="fashion",how="shared"} 1)"));
    CHECK_THAT(metrics,
               Catch::Contains(R"(torchpool_tensors_total{model="fashion",how="inline"} 0)"));
    CHECK(WIFEXITED(server.terminate()));
}

namespace {

// A POSIX shared-memory object of `bytes` that a client made, mapped by it; unlinked at the end.
struct client_region {
    client_region(const std::string& tag, std::size_t size)
        : key("/torchpool-serve-test-" + tag + "-" + std::to_string(::getpid())), bytes(size) {
        fd = ::shm_open(key.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
        REQUIRE(fd >= 0);
        REQUIRE(::ftruncate(fd, static_cast<off_t>(bytes)) == 0);
        base =
            static_cast<char*>(::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
        REQUIRE(base != MAP_FAILED);
    }
    ~client_region() {
        ::munmap(base, bytes);
        ::close(fd);
        ::shm_unlink(key.c_str());
    }
    std::string registration(std::size_t offset, std::size_t size) const {
        return json::serialize(json::object{{"key", key}, {"offset", offset}, {"byte_size", size}});
    }
    std::string key;
    std::size_t bytes;
    int fd = -1;
    char* base = nullptr;
};

// An infer request for `images`, whose bytes are in region `in` at 0 and whose logits go to
// region `out` at `out_offset`, `out_size` bytes at most.
std::string infer_in_regions(const tensor& images, const std::string& in, const std::string& out,
                             std::size_t out_offset, std::size_t out_size,
                             const std::string& fault = "") {
    json::object body{
        {"inputs",
         json::array{json::object{
             {"name", "images"},
             {"datatype", "FP32"},
             {"shape", json::array{images.shape[0], 1, 28, 28}},
             {"parameters", json::object{{"shared_memory_region", in},
                                         {"shared_memory_byte_size", images.data.size()}}}}}},
        {"outputs", json::array{json::object{
                        {"name", "logits"},
                        {"parameters", json::object{{"shared_memory_region", out},
                                                    {"shared_memory_offset", out_offset},
                                                    {"shared_memory_byte_size", out_size}}}}}}};
    if (!fault.empty()) {
        body["parameters"] = json::object{{"torchpool_fault", fault}};
    }
    return json::serialize(body);
}

// The logits `raw` holds are those the model gives `images` in this process.
void check_logits(const char* raw, const tensor& images) {
    const tensor expected = test::run_in_process(TORCHPOOL_DEFAULT_MODEL, "forward", images);
    const auto* want = reinterpret_cast<const float*>(expected.data.data());
    for (std::size_t i = 0; i < expected.data.size() / sizeof(float); ++i) {
        float got = 0;
        std::memcpy(&got, raw + i * sizeof got, sizeof got);
        CHECK(std::abs(got - want[i]) < 1e-4);
    }
}

}  // namespace

TEST_CASE("tensors through shared-memory regions (Triton's extension): no bytes over HTTP",
          "[serve][e2e][shm]") {
    server_process server({"--fault-injection", "--workers", "1", "--allow-shared-memory"});
    const tensor images = test::fashion_test_images(4);
    client_region io("io", 64 * 1024);
    CHECK_THAT(curl("GET", server.url("/v2")).body, Catch::Contains("system_shared_memory"));
    std::memcpy(io.base, images.data.data(), images.data.size());
    const auto url = [&](const std::string& path) { return server.url(path); };

    // Registered, listed, and a round trip: inputs read from the region, logits written back.
    auto r = curl("POST", url("/v2/systemsharedmemory/region/io/register"),
                  io.registration(0, io.bytes));
    REQUIRE(r.status == 200);
    r = curl("GET", url("/v2/systemsharedmemory/status"));
    CHECK(r.status == 200);
    CHECK_THAT(r.body, Catch::Contains(R"("name":"io")") && Catch::Contains(io.key));
    r = curl("POST", url("/v2/models/fashion/infer"),
             infer_in_regions(images, "io", "io", 32 * 1024, 4 * 10 * 4));
    INFO(r.body);
    REQUIRE(r.status == 200);
    auto v = json::parse(r.body).as_object();
    auto& out = v["outputs"].as_array()[0].as_object();
    CHECK_FALSE(out.contains("data"));
    CHECK(out["parameters"].as_object()["shared_memory_byte_size"].as_int64() == 4 * 10 * 4);
    CHECK(r.body.size() < 400);  // where the tensors are, not the tensors
    check_logits(io.base + 32 * 1024, images);

    // Bad regions are 400s that say what is wrong, and the server stays up.
    r = curl("POST", url("/v2/models/fashion/infer"),
             infer_in_regions(images, "nope", "io", 0, 160));
    CHECK(r.status == 400);
    CHECK_THAT(r.body, Catch::Contains("'nope', which is not registered"));
    r = curl("POST", url("/v2/models/fashion/infer"),
             infer_in_regions(images, "io", "io", 64 * 1024 - 8, 8));
    CHECK(r.status == 400);
    CHECK_THAT(r.body, Catch::Contains("has 160 bytes, more than its parameters."
                                       "shared_memory_byte_size of 8"));
    r = curl("POST", url("/v2/systemsharedmemory/region/big/register"),
             io.registration(0, io.bytes + 1));
    CHECK(r.status == 400);
    CHECK_THAT(r.body, Catch::Contains("asks for 65537 bytes"));
    r = curl("POST", url("/v2/systemsharedmemory/region/x/register"), R"({"key": "/../etc"})");
    CHECK(r.status == 400);
    CHECK(curl("GET", url("/v2/health/live")).status == 200);

    // Unregistering a region a request waits to use: that request still gets it. The one
    // worker is held by a request that hangs; the region's request waits in the queue.
    {
        auto hang = json::parse(infer_body(test::fashion_test_images(1), "holder")).as_object();
        hang["parameters"] = json::object{{"torchpool_fault", "hang"}};
        std::optional<connection> holder(std::in_place, server.port());
        holder->send("POST", "/v2/models/fashion/infer", json::serialize(hang));
        // Its request runs before the next is sent (HTTP threads parse requests in parallel).
        REQUIRE(metrics_show(server, R"(torchpool_workers{model="fashion",state="busy"} 1)"));
        connection waiting(server.port());
        std::memset(io.base + 32 * 1024, 0, 160);
        waiting.send("POST", "/v2/models/fashion/infer",
                     infer_in_regions(images, "io", "io", 32 * 1024, 160));
        REQUIRE(metrics_show(server, R"(torchpool_queue_depth{model="fashion"} 1)"));
        r = curl("POST", url("/v2/systemsharedmemory/region/io/unregister"));
        CHECK(r.status == 200);
        CHECK(curl("GET", url("/v2/systemsharedmemory/status")).body == "[]");
        holder.reset();  // the hanging request's client leaves: it is cancelled
        const auto answer = waiting.receive();
        INFO(answer);
        CHECK_THAT(answer, Catch::StartsWith("HTTP/1.1 200"));
        check_logits(io.base + 32 * 1024, images);
    }
    CHECK(WIFEXITED(server.terminate()));
}
