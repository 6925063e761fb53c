// torchpool-serve end to end: the real server on a free loopback port, the real HTTP client
// (curl), real Fashion-MNIST test images, and predictions compared with the same model run in
// this process.
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

namespace {

// The server run with `args` until it exits (it should refuse them at once): its exit status
// and what it printed.
std::pair<int, std::string> refused_options(const std::string& args) {
    const std::string command = std::string(TORCHPOOL_SERVE) + " " + args + " 2>&1";
    std::FILE* p = ::popen(command.c_str(), "r");
    REQUIRE(p != nullptr);
    std::string out;
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) {
        out.append(buf, n);
    }
    return {::pclose(p), out};
}

}  // namespace

TEST_CASE("bad options are refused at once, naming the option and what it must be",
          "[serve][e2e]") {
    for (const auto& [args, words] : std::vector<std::pair<std::string, std::string>>{
             {"--header-timeout-ms 0", "--header-timeout-ms: must be a number above 0, not '0'"},
             {"--idle-timeout-ms x", "--idle-timeout-ms: must be a number above 0, not 'x'"},
             {"--max-connections 0", "--max-connections: must be a number above 0"},
             {"--min-bytes-per-second -5", "--min-bytes-per-second: must be a number above 0"},
             {"--batch-delay-us -1", "--batch-delay-us: must be a number of 0 or more"},
             {"--model nothing", "--model wants NAME=PATH, got 'nothing'"},
             {"--model m=/no/such.pt", "/no/such.pt"}}) {
        const auto [status, out] = refused_options(args);
        INFO(args << ": " << out);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) != 0);
        CHECK_THAT(out, Catch::Contains(words));
    }
}

TEST_CASE("the server answers every endpoint, and its predictions equal the model's own",
          "[serve][e2e]") {
    server_process server({});
    CHECK_THAT(server.output(), Catch::Contains("workers ready: 2 of 2"));
    CHECK_THAT(server.output(), Catch::Contains("try: curl -s -d @"));

    auto r = curl("GET", server.url("/v2"));
    CHECK(r.status == 200);
    CHECK(json::parse(r.body).as_object()["name"] == "torchpool");
    CHECK(curl("GET", server.url("/v2/health/live")).status == 200);
    CHECK(curl("GET", server.url("/v2/health/ready")).status == 200);
    CHECK(curl("GET", server.url("/v2/models/fashion/ready")).status == 200);
    CHECK(curl("GET", server.url("/v2/models/fashion/versions/1/ready")).status == 200);
    r = curl("GET", server.url("/v2/models/fashion"));
    CHECK(r.status == 200);
    auto meta = json::parse(r.body).as_object();
    CHECK(meta["inputs"].as_array()[0].as_object()["name"] == "images");
    CHECK(meta["outputs"].as_array()[0].as_object()["shape"].as_array()[1].as_int64() == 10);

    // 32 real images: the server's logits are the model's own, run in this process.
    const tensor images = test::fashion_test_images(32);
    r = curl("POST", server.url("/v2/models/fashion/infer"), infer_body(images, "batch-1"));
    REQUIRE(r.status == 200);
    auto answer = json::parse(r.body).as_object();
    CHECK(answer["id"] == "batch-1");
    auto& out = answer["outputs"].as_array()[0].as_object();
    CHECK(out["name"] == "logits");
    CHECK(out["shape"].as_array()[0].as_int64() == 32);
    const tensor expected = test::run_in_process(TORCHPOOL_DEFAULT_MODEL, "forward", {images});
    const auto* want = reinterpret_cast<const float*>(expected.data.data());
    auto& got = out["data"].as_array();
    REQUIRE(got.size() == 320);
    for (std::size_t i = 0; i < got.size(); ++i) {
        CHECK(std::abs(got[i].to_number<double>() - want[i]) < 1e-4);
    }
    // The same through a versioned path, one image.
    r = curl("POST", server.url("/v2/models/fashion/versions/1/infer"),
             infer_body(test::fashion_test_images(1), "one"));
    CHECK(r.status == 200);
    CHECK(curl("POST", server.url("/v2/models/fashion/infer"), "{").status == 400);

    // Metrics, in the Prometheus text format: the requests above, the workers, the pool's
    // latency histograms.
    r = curl("GET", server.url("/metrics"));
    CHECK(r.status == 200);
    CHECK_THAT(r.body,
               Catch::Contains(R"(torchpool_http_requests_total{code="200",model="fashion"} 2)"));
    CHECK_THAT(r.body,
               Catch::Contains(R"(torchpool_http_requests_total{code="400",model="fashion"} 1)"));
    CHECK_THAT(r.body, Catch::Contains(R"(torchpool_workers{model="fashion",state="idle"} 2)"));
    CHECK_THAT(r.body,
               Catch::Contains(R"(torchpool_tasks_total{model="fashion",outcome="succeeded"} 2)"));
    CHECK_THAT(r.body, Catch::Contains(R"(torchpool_batch_rows_count{model="fashion"} 2)"));
    CHECK_THAT(r.body, Catch::Contains(R"(torchpool_queue_seconds_count{model="fashion"} 2)"));
    CHECK_THAT(r.body,
               Catch::Contains(R"(torchpool_request_seconds_bucket{model="fashion",le="+Inf"} 3)"));
    CHECK_THAT(r.body, Catch::Contains("# TYPE torchpool_compute_seconds histogram"));

    // The request the server printed works as printed: a real test image (the trainer left
    // it beside the model), classified as the model does here.
    const auto at = server.output().find("try: ");
    const auto line = server.output().substr(at + 5, server.output().find('\n', at) - at - 5);
    CHECK_THAT(line, Catch::Contains("fashion_mnist.sample.json"));
    std::FILE* p = ::popen(line.c_str(), "r");
    REQUIRE(p != nullptr);
    std::string printed;
    char buf[8192];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) {
        printed.append(buf, n);
    }
    ::pclose(p);
    // It asks for a classification (Triton's extension): the three likeliest classes of the
    // image, by name, as the model ranks them here.
    auto sample = json::parse(printed).as_object();
    CHECK_THAT(std::string(sample["id"].as_string()), Catch::Contains("test image 0"));
    auto& output = sample["outputs"].as_array()[0].as_object();
    CHECK(output["datatype"] == "BYTES");
    CHECK(output["shape"] == json::array{1, 3});
    const auto& top = output["data"].as_array();
    REQUIRE(top.size() == 3);
    const tensor first =
        test::run_in_process(TORCHPOOL_DEFAULT_MODEL, "forward", test::fashion_test_images(1));
    const auto* first_logits = reinterpret_cast<const float*>(first.data.data());
    std::vector<std::size_t> ranked(10);
    for (std::size_t c = 0; c < 10; ++c) {
        ranked[c] = c;
    }
    std::stable_sort(ranked.begin(), ranked.end(), [&](std::size_t a, std::size_t b) {
        return first_logits[a] > first_logits[b];
    });
    for (std::size_t i = 0; i < 3; ++i) {
        const std::string entry(top[i].as_string());
        INFO("entry " << i << ": " << entry);
        const auto colon = entry.find(':');
        CHECK(std::abs(std::stod(entry.substr(0, colon)) - first_logits[ranked[i]]) < 1e-4);
        CHECK(entry.substr(colon + 1) ==
              std::to_string(ranked[i]) + ":" + apps::fashion_mnist_classes[ranked[i]]);
    }
    // The test image 0 is an ankle boot, and the model knows it.
    CHECK_THAT(std::string(top[0].as_string()), Catch::EndsWith(":9:Ankle boot"));

    CHECK(WIFEXITED(server.terminate()));
}

TEST_CASE("bad requests get a 4xx with a JSON error naming the problem, and the server stays up",
          "[serve][e2e]") {
    server_process server({"--max-body-bytes", "100000"});
    const auto infer = server.url("/v2/models/fashion/infer");
    const auto error_of = [](const http_reply& r) {
        return std::string(json::parse(r.body).as_object()["error"].as_string());
    };
    auto r = curl("POST", infer, "{not json");
    CHECK(r.status == 400);
    CHECK_THAT(error_of(r), Catch::Contains("not valid JSON"));
    r = curl("POST", infer,
             R"({"inputs":[{"name":"images","datatype":"INT64","shape":[1,1,28,28],"data":[]}]})");
    CHECK(r.status == 400);
    CHECK_THAT(error_of(r), Catch::Contains("wants FP32"));
    r = curl("POST", infer,
             R"({"inputs":[{"name":"images","datatype":"FP32","shape":[1,28,28],"data":[0]}]})");
    CHECK(r.status == 400);
    CHECK_THAT(error_of(r), Catch::Contains("wants [-1, 1, 28, 28]"));
    r = curl("POST", server.url("/v2/models/shoes/infer"), "{}");
    CHECK(r.status == 404);
    CHECK_THAT(error_of(r), Catch::Contains("no model named 'shoes'"));
    r = curl("GET", infer);
    CHECK(r.status == 405);
    r = curl("POST", infer,
             infer_body(test::fashion_test_images(20), "too big"));  // ~300 KB of JSON
    CHECK(r.status == 413);
    CHECK_THAT(error_of(r), Catch::Contains("--max-body-bytes"));
    r = curl("POST", infer,
             R"({"inputs":[{"name":"images","datatype":"FP32","shape":[1,1,28,28],)"
             R"("data":[0]}],"parameters":{"torchpool_fault":"crash"}})");
    CHECK(r.status == 400);
    r = curl("GET", server.url("/metrics/nothing"));
    CHECK(r.status == 404);
    // Still serving.
    r = curl("POST", infer, infer_body(test::fashion_test_images(2), "after"));
    CHECK(r.status == 200);
    CHECK(curl("GET", server.url("/v2/health/ready")).status == 200);
    const int status = server.terminate();
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

namespace {

// Reads the server's metrics until `line` is among them, for at most a minute; true if it was.
bool wait_for_metric(const server_process& server, const std::string& line) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
        if (curl("GET", server.url("/metrics")).body.find(line) != std::string::npos) {
            return true;
        }
    }
    return false;
}

// Both of the server's workers kept busy, each by a request that hangs in it, from a
// connection of its own, so that requests sent meanwhile wait to be batched. release() lets
// them go: the first hanging request's client leaves, its task is cancelled, and the batcher
// sends what waits (to the worker that replaces the hung one). The server needs
// --fault-injection.
class busy_workers {
public:
    explicit busy_workers(const server_process& server) {
        auto body = json::parse(infer_body(test::fashion_test_images(1), "hang")).as_object();
        body["parameters"] = json::object{{"torchpool_fault", "hang"}};
        for (auto& c : hanging_) {
            c = std::make_unique<connection>(server.port());
            c->send("POST", "/v2/models/fashion/infer", json::serialize(body));
        }
        REQUIRE(wait_for_metric(server, R"(torchpool_workers{model="fashion",state="busy"} 2)"));
    }
    void release() { hanging_[0].reset(); }
    ~busy_workers() { hanging_[1].reset(); }

private:
    std::unique_ptr<connection> hanging_[2];
};

}  // namespace

namespace {

// The names of the threads of process `pid` that serve HTTP.
std::size_t http_threads_of(pid_t pid) {
    std::size_t n = 0;
    for (const auto& task :
         std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
        std::ifstream comm(task.path() / "comm");
        std::string name;
        std::getline(comm, name);
        n += name.rfind("tp-serve-http", 0) == 0;
    }
    return n;
}

}  // namespace

TEST_CASE("concurrent requests are batched, and each gets its own rows back", "[serve][e2e]") {
    // HTTP on the supervising thread, or on threads of its own: requests that arrive on
    // different threads join the same batch.
    const std::string threads = GENERATE("0", "3");
    // Room for more than the eight (a full batch would go at once).
    server_process server({"--max-batch", "16", "--batch-delay-us", "60000000", "--fault-injection",
                           "--http-threads", threads});
    CHECK(http_threads_of(server.pid()) == std::stoul(threads));
    const tensor images = test::fashion_test_images(8);
    const std::size_t bytes = images.data.size() / 8;
    busy_workers busy(server);
    // Eight requests, one image each, wait while both workers are busy; then go as one batch.
    std::vector<std::unique_ptr<connection>> clients;
    for (std::size_t i = 0; i < 8; ++i) {
        tensor one(dtype::float32, {1, 1, 28, 28}, images.data.substr(i * bytes, bytes));
        clients.push_back(std::make_unique<connection>(server.port()));
        clients.back()->send("POST", "/v2/models/fashion/infer",
                             infer_body(one, "image " + std::to_string(i)));
    }
    REQUIRE(wait_for_metric(server, R"(torchpool_batch_waiting{model="fashion"} 8)"));
    busy.release();
    const tensor expected = test::run_in_process(TORCHPOOL_DEFAULT_MODEL, "forward", images);
    const auto* want = reinterpret_cast<const float*>(expected.data.data());
    for (std::size_t i = 0; i < clients.size(); ++i) {
        const std::string answer = clients[i]->receive();
        INFO("reply " << i << ": " << answer);
        REQUIRE_THAT(answer, Catch::StartsWith("HTTP/1.1 200"));
        auto v = json::parse(answer.substr(answer.find("\r\n\r\n") + 4)).as_object();
        CHECK(v["id"].as_string() == ("image " + std::to_string(i)).c_str());
        CHECK(v["parameters"].as_object()["torchpool_batch_rows"].as_int64() == 8);
        const auto& logits = v["outputs"].as_array()[0].as_object()["data"].as_array();
        REQUIRE(logits.size() == 10);
        for (std::size_t k = 0; k < 10; ++k) {
            CHECK(std::abs(logits[k].to_number<double>() - want[i * 10 + k]) < 1e-4);
        }
    }
    auto r = curl("GET", server.url("/metrics"));
    CHECK_THAT(r.body, Catch::Contains(R"(torchpool_batch_rows_bucket{model="fashion",le="8"})"));
}

TEST_CASE("a poison request in a batch fails alone, with its cause, and the others are answered",
          "[serve][e2e]") {
    server_process server(
        {"--max-batch", "8", "--batch-delay-us", "60000000", "--fault-injection"});
    const tensor image = test::fashion_test_images(1);
    busy_workers busy(server);
    std::vector<std::unique_ptr<connection>> clients;
    for (int i = 0; i < 4; ++i) {
        auto body = json::parse(infer_body(image, "r" + std::to_string(i))).as_object();
        if (i == 2) {
            body["parameters"] = json::object{{"torchpool_fault", "crash"}};
        }
        clients.push_back(std::make_unique<connection>(server.port()));
        clients.back()->send("POST", "/v2/models/fashion/infer", json::serialize(body));
    }
    // The four go as one batch, which crashes its worker; each then runs alone, once.
    REQUIRE(wait_for_metric(server, R"(torchpool_batch_waiting{model="fashion"} 4)"));
    busy.release();
    for (std::size_t i = 0; i < clients.size(); ++i) {
        const std::string answer = clients[i]->receive();
        INFO("reply " << i << ": " << answer);
        if (i == 2) {
            CHECK_THAT(answer, Catch::StartsWith("HTTP/1.1 500"));
            CHECK_THAT(answer, Catch::Contains("SIGSEGV"));
        } else {
            CHECK_THAT(answer, Catch::StartsWith("HTTP/1.1 200"));
            CHECK_THAT(answer, Catch::Contains(R"("torchpool_batch_rows":1)"));  // ran again alone
        }
    }
    // Still ready, and serving.
    CHECK(curl("GET", server.url("/v2/health/ready")).status == 200);
    CHECK(curl("POST", server.url("/v2/models/fashion/infer"), infer_body(image, "after")).status ==
          200);
    // Without --fault-injection such a request is refused: see the bad-request test.
}

TEST_CASE("requests of 0 rows, alone or waiting together, get the model's empty answer",
          "[serve][e2e]") {
    // Two of them stacked into a batch of 0 rows killed the server (SIGFPE splitting it).
    server_process server(
        {"--max-batch", "8", "--batch-delay-us", "60000000", "--fault-injection"});
    const std::string empty =
        R"({"id":"none","inputs":[{"name":"images","datatype":"FP32","shape":[0,1,28,28],)"
        R"("data":[]}]})";
    auto r = curl("POST", server.url("/v2/models/fashion/infer"), empty);  // alone
    REQUIRE(r.status == 200);
    CHECK_THAT(r.body, Catch::Contains(R"("shape":[0,10],"data":[])"));
    busy_workers busy(server);
    std::vector<std::unique_ptr<connection>> clients;
    for (int i = 0; i < 3; ++i) {
        clients.push_back(std::make_unique<connection>(server.port()));
        clients.back()->send("POST", "/v2/models/fashion/infer",
                             i < 2 ? empty : infer_body(test::fashion_test_images(1), "one"));
    }
    // The empty ones are not held for a batch: only the image waits.
    REQUIRE(wait_for_metric(server, R"(torchpool_batch_waiting{model="fashion"} 1)"));
    busy.release();
    for (std::size_t i = 0; i < clients.size(); ++i) {
        const std::string answer = clients[i]->receive();
        INFO("reply " << i << ": " << answer);
        CHECK_THAT(answer, Catch::StartsWith("HTTP/1.1 200"));
        CHECK_THAT(answer, Catch::Contains(i < 2 ? R"("shape":[0,10])" : R"("shape":[1,10])"));
    }
    CHECK(curl("GET", server.url("/v2/health/ready")).status == 200);
}

TEST_CASE("SIGTERM drains: a request in flight is answered, idle connections close, exit 0",
          "[serve][e2e]") {
    server_process server({"--fault-injection", "--max-batch", "1"});
    // Two keep-alive connections, each past one request (so the server has accepted them).
    connection busy(server.port()), idle(server.port());
    busy.send("GET", "/v2/health/live");
    CHECK_THAT(busy.receive(), Catch::StartsWith("HTTP/1.1 200"));
    idle.send("GET", "/v2/health/live");
    CHECK_THAT(idle.receive(), Catch::StartsWith("HTTP/1.1 200"));
    // A request that takes 100 ms (a delay fault) is sent, then SIGTERM at once.
    auto body = json::parse(infer_body(test::fashion_test_images(1), "slow")).as_object();
    body["parameters"] = json::object{{"torchpool_fault", "delay"}};
    busy.send("POST", "/v2/models/fashion/infer", json::serialize(body));
    const int status = server.terminate();
    // The request in flight was answered, and its connection then closed; the idle one was
    // closed without a word.
    const auto answer = busy.receive();
    CHECK_THAT(answer, Catch::StartsWith("HTTP/1.1 200"));
    CHECK_THAT(answer, Catch::Contains("Connection: close"));
    CHECK_THAT(answer, Catch::Contains("\"slow\""));
    CHECK(busy.receive().empty());
    CHECK(idle.receive().empty());
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK_THAT(server.output(), Catch::Contains("draining"));
    CHECK_THAT(server.output(), Catch::Contains("stopped"));
}

TEST_CASE("a client that goes away cancels its request", "[serve][e2e]") {
    server_process server({"--fault-injection", "--max-batch", "1"});
    auto body = json::parse(infer_body(test::fashion_test_images(1), "abandoned")).as_object();
    body["parameters"] = json::object{{"torchpool_fault", "hang"}};
    {
        // A request whose worker would hang in it; its client leaves at once.
        connection client(server.port());
        client.send("POST", "/v2/models/fashion/infer", json::serialize(body));
    }
    // Cancelled (terminal): its worker is told. If the cancel reached it before the request
    // ran, it answers at once; if it was hanging in it, it is killed after the pool's cancel
    // grace (the pool's own tests provoke each case). Either way nothing stays stuck.
    const bool told = server.wait_for("a client went away before its answer");
    INFO("server output: " << server.output());
    REQUIRE(told);
    auto r = curl("GET", server.url("/metrics"));
    CHECK_THAT(r.body,
               Catch::Contains(R"(torchpool_http_requests_total{code="499",model="fashion"} 1)"));
    CHECK_THAT(r.body,
               Catch::Contains(R"(torchpool_tasks_total{model="fashion",outcome="cancelled"} 1)"));
    // The others are served, by both workers.
    const auto replies = curl_at_once(server.url("/v2/models/fashion/infer"),
                                      {infer_body(test::fashion_test_images(1), "a"),
                                       infer_body(test::fashion_test_images(1), "b")});
    CHECK(replies[0].status == 200);
    CHECK(replies[1].status == 200);
    CHECK(WIFEXITED(server.terminate()));
}

TEST_CASE("the drain ends inside the grace the Kubernetes manifest gives the pod",
          "[serve][e2e][k8s]") {
    // The manifest's numbers: the pod's grace, its preStop sleep, the server's drain bound.
    std::stringstream text;
    text << std::ifstream(TORCHPOOL_SOURCE_DIR "/deploy/kubernetes/deployment.yaml").rdbuf();
    const std::string manifest = text.str();
    const auto number_after = [&](const std::string& key) {
        const auto at = manifest.find(key);
        REQUIRE(at != std::string::npos);
        return std::stol(manifest.substr(manifest.find_first_of("0123456789", at + key.size())));
    };
    const long grace_s = number_after("terminationGracePeriodSeconds:");
    const long pre_stop_s = number_after(R"(command: ["sleep", ")");
    const long drain_ms = number_after("--drain-timeout-ms=");
    const long request_ms = number_after("--timeout-ms=");
    CHECK(pre_stop_s * 1000 + drain_ms < grace_s * 1000);
    // The server as the manifest runs it (its address, port and size aside), with a request
    // that never ends in flight: the drain waits for it until its deadline (--timeout-ms) or
    // the drain's bound, whichever comes first.
    std::vector<std::string> args = {"--fault-injection"};
    for (std::size_t at = manifest.find("- --"); at != std::string::npos;
         at = manifest.find("- --", at + 1)) {
        const std::string arg = manifest.substr(at + 2, manifest.find('\n', at) - at - 2);
        if (!arg.starts_with("--host") && !arg.starts_with("--port") &&
            !arg.starts_with("--workers")) {
            args.push_back(arg);
        }
    }
    server_process server(args);
    connection busy(server.port());
    busy.send("GET", "/v2/health/live");
    REQUIRE_THAT(busy.receive(), Catch::StartsWith("HTTP/1.1 200"));
    auto body = json::parse(infer_body(test::fashion_test_images(1), "endless")).as_object();
    body["parameters"] = json::object{{"torchpool_fault", "hang"}};
    busy.send("POST", "/v2/models/fashion/infer", json::serialize(body));
    const auto before = std::chrono::steady_clock::now();
    const int status = server.terminate();
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - before);
    INFO("drain took " << took.count() << " ms; the pod has " << (grace_s - pre_stop_s) * 1000
                       << " ms after its preStop");
    CHECK(took.count() >= std::min(drain_ms, request_ms) - 100);  // it waited for the request
    CHECK(took.count() < (grace_s - pre_stop_s) * 1000);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    if (request_ms < drain_ms) {
        CHECK_THAT(busy.receive(), Catch::StartsWith("HTTP/1.1 504"));  // its deadline
    } else {
        CHECK_THAT(server.output(), Catch::Contains("longer than --drain-timeout-ms"));
    }
}

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

TEST_CASE("HTTP/1.1 as clients and proxies rely on it (RFC 9110, 9112)", "[serve][e2e]") {
    server_process server({"--max-body-bytes", "100000"});
    using Catch::Contains;
    using Catch::StartsWith;
    {
        // HEAD: the head a GET gets, Content-Length and all, and no body, so the next
        // response on the connection is read whole. Every response has a Date.
        connection c(server.port());
        c.send("HEAD", "/v2");
        const auto head = c.receive_head();
        CHECK_THAT(
            head, StartsWith("HTTP/1.1 200") && Contains("Content-Length: ") && Contains("Date: "));
        c.send("GET", "/v2/health/live");
        CHECK_THAT(c.receive(), StartsWith("HTTP/1.1 200") && Contains(R"({"live":true})"));
        c.send("DELETE", "/v2/health/live");
        CHECK_THAT(c.receive(), StartsWith("HTTP/1.1 405") && Contains("Allow: GET, HEAD"));
    }
    {
        // Pipelined: two requests with bodies in one write, each answered, in order.
        connection c(server.port());
        const auto body = infer_body(test::fashion_test_images(1), "first");
        const auto request =
            "POST /v2/models/fashion/infer HTTP/1.1\r\nHost: test\r\n"
            "Content-Length: " +
            std::to_string(body.size()) + "\r\n\r\n" + body;
        c.send_raw(request + request);
        CHECK_THAT(c.receive(), StartsWith("HTTP/1.1 200") && Contains(R"("id":"first")"));
        CHECK_THAT(c.receive(), StartsWith("HTTP/1.1 200") && Contains(R"("id":"first")"));
    }
    {
        // Expect: 100-continue: a 100 first, then the body is read and answered.
        connection c(server.port());
        const auto body = infer_body(test::fashion_test_images(1), "expect");
        c.send_raw(
            "POST /v2/models/fashion/infer HTTP/1.1\r\nHost: test\r\n"
            "Content-Type: application/json\r\nExpect: 100-continue\r\n"
            "Content-Length: " +
            std::to_string(body.size()) + "\r\n\r\n");
        CHECK_THAT(c.receive_head(), StartsWith("HTTP/1.1 100 Continue"));
        c.send_raw(body);
        CHECK_THAT(c.receive(), StartsWith("HTTP/1.1 200"));
    }
    {
        // An unsupported transfer coding: 501 and the connection closed; what follows is
        // never read as a second request (the shape of request smuggling behind a proxy).
        connection c(server.port());
        c.send_raw(
            "POST /v2/health/live HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: foo\r\n\r\n"
            "GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n");
        CHECK_THAT(c.receive(), StartsWith("HTTP/1.1 501") && Contains("transfer coding 'foo'"));
        CHECK(c.receive().empty());
    }
    const auto one_shot = [&](const std::string& request) {
        connection c(server.port());
        c.send_raw(request);
        return c.receive();
    };
    CHECK_THAT(one_shot("GET /v2 HTTP/1.1\r\n\r\n"),
               StartsWith("HTTP/1.1 400") && Contains("needs a Host header"));
    CHECK_THAT(one_shot("GET /v2 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
               StartsWith("HTTP/1.1 400") && Contains("only one Host"));
    CHECK_THAT(one_shot("GET http://127.0.0.1:" + std::to_string(server.port()) +
                        "/v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
               StartsWith("HTTP/1.1 200"));
    CHECK_THAT(one_shot("GET /" + std::string(100'000, 'a') + " HTTP/1.1\r\nHost: t\r\n\r\n"),
               StartsWith("HTTP/1.1 414"));
    CHECK_THAT(
        one_shot("GET /v2 HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(20'000, 'b') + "\r\n\r\n"),
        StartsWith("HTTP/1.1 431"));
    CHECK_THAT(one_shot("BREW /v2 HTTP/1.1\r\nHost: t\r\n\r\n"), StartsWith("HTTP/1.1 501"));
    // The protocol's details: a trailing slash, the extensions implemented, a model's
    // readiness with its name.
    CHECK_THAT(one_shot("GET /v2/ HTTP/1.1\r\nHost: t\r\n\r\n"),
               StartsWith("HTTP/1.1 200") &&
                   Contains(R"("extensions":["binary_tensor_data","classification"])"));
    // Shared-memory regions are off unless the server is started with them.
    CHECK_THAT(one_shot("POST /v2/systemsharedmemory/region/a/register HTTP/1.1\r\nHost: t\r\n"
                        "Content-Length: 2\r\n\r\n{}"),
               StartsWith("HTTP/1.1 403") && Contains("--allow-shared-memory"));
    CHECK_THAT(one_shot("GET /v2/models/fashion/ready HTTP/1.1\r\nHost: t\r\n\r\n"),
               StartsWith("HTTP/1.1 200") && Contains(R"({"name":"fashion","ready":true})"));
    CHECK_THAT(one_shot("POST /v2/models/fashion/infer HTTP/1.1\r\nHost: t\r\n"
                        "Content-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc"),
               StartsWith("HTTP/1.1 415"));
    {
        // A client that writes its whole body before reading still reads the 413: the
        // server answers from the head, then reads and drops what comes before it closes.
        connection c(server.port());
        const std::string big(20u << 20, 'x');
        c.send_raw(
            "POST /v2/models/fashion/infer HTTP/1.1\r\nHost: test\r\n"
            "Content-Length: " +
            std::to_string(big.size()) + "\r\n\r\n");
        c.send_raw(big);  // all of it written: the server did not close on it
        CHECK_THAT(c.receive(), StartsWith("HTTP/1.1 413") && Contains("--max-body-bytes"));
    }
    CHECK(curl("GET", server.url("/v2/health/ready")).status == 200);
    CHECK(WIFEXITED(server.terminate()));
}

TEST_CASE("the metrics count every answer the clients received, by model and status",
          "[serve][e2e]") {
    server_process server({"--max-body-bytes", "100000"});
    const auto infer = server.url("/v2/models/fashion/infer");
    const auto image = infer_body(test::fashion_test_images(1), "m");
    // What the clients received, by (model label, status): the model is that of an infer
    // request for a served model, "" for every other answer.
    std::map<std::pair<std::string, unsigned>, int> received;
    const auto count = [&](const std::string& model, unsigned status) {
        ++received[{model, status}];
    };
    count("fashion", curl("POST", infer, image).status);
    count("fashion", curl("POST", infer, image).status);
    count("fashion", curl("POST", infer, "{not json").status);
    count("fashion", curl("GET", infer).status);
    count("", curl("POST", server.url("/v2/models/shoes/infer"), "{}").status);
    count("", curl("GET", server.url("/v2/health/live")).status);
    count("", curl("GET", server.url("/nowhere")).status);
    count("", curl("POST", infer, infer_body(test::fashion_test_images(20), "big")).status);
    const auto raw_status = [&](const std::string& request) {
        connection c(server.port());
        c.send_raw(request);
        const auto answer = c.receive();
        return static_cast<unsigned>(std::stoul(answer.substr(9, 3)));
    };
    count("",
          raw_status("POST /v2/health/live HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: foo\r\n\r\n"));
    count("", raw_status("GET /v2 HTTP/1.1\r\n\r\n"));
    CHECK(received[{"fashion", 200}] == 2);
    CHECK(received[{"", 413}] == 1);
    const auto text = curl("GET", server.url("/metrics")).body;
    for (const auto& [key, n] : received) {
        const std::string line = "torchpool_http_requests_total{code=\"" +
                                 std::to_string(key.second) + "\",model=\"" + key.first + "\"} " +
                                 std::to_string(n) + "\n";
        INFO("expected the line " << line);
        CHECK_THAT(text, Catch::Contains(line));
    }
    // And nothing else was counted.
    int lines = 0;
    for (std::size_t at = 0;
         (at = text.find("\ntorchpool_http_requests_total{", at)) != std::string::npos; ++at) {
        ++lines;
    }
    CHECK(lines == static_cast<int>(received.size()));
    CHECK(WIFEXITED(server.terminate()));
}

TEST_CASE("slow and idle clients are cut off at the deadline of the stage they are in",
          "[serve][e2e]") {
    server_process server({"--header-timeout-ms", "300", "--idle-timeout-ms", "600",
                           "--min-bytes-per-second", "100000"});
    // Half-open: connects and says nothing. Slowloris: part of a head, then nothing.
    connection silent(server.port());
    connection slow_head(server.port());
    slow_head.send_raw("GET /v2/health/live HTTP/1.1\r\nHost: test\r\nX-a: b\r\n");
    // A slow body: its head, then 1 byte of 100,000 (100 KB a second after 300 ms wanted).
    connection slow_body(server.port());
    slow_body.send_raw(
        "POST /v2/models/fashion/infer HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n{");
    // Kept alive after its answer, then idle.
    connection idle(server.port());
    idle.send("GET", "/v2/health/live");
    CHECK_THAT(idle.receive(), Catch::StartsWith("HTTP/1.1 200"));
    CHECK(silent.receive().empty());  // each is closed by the server
    CHECK(slow_head.receive().empty());
    CHECK(slow_body.receive().empty());
    CHECK(idle.receive().empty());
    // A slow reader: 1000 scrapes of ~10 KB (past the 4 MiB a send buffer grows to at most
    // here) pipelined through a small receive window, and none read. Past what the kernel
    // buffers, the server's write stalls, and it is cut.
    connection reader(server.port(), 4096);
    std::string pipelined;
    for (int i = 0; i < 1000; ++i) {
        pipelined += "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n";
    }
    reader.send_raw(pipelined);
    CHECK(wait_for_metric(server, R"(torchpool_http_connections_cut_total{reason="deadline"} 5)"));
    // It then reads what was sent before the cut: fewer than its 1000 answers, then the end.
    const auto got = reader.read_to_end();
    std::size_t answers = 0;
    for (std::size_t p = 0; (p = got.find("HTTP/1.1 200", p)) != std::string::npos; ++p) {
        ++answers;
    }
    CHECK(answers < 1000);
    // Still serving.
    CHECK(curl("GET", server.url("/v2/health/ready")).status == 200);
    CHECK(WIFEXITED(server.terminate()));
}

TEST_CASE("near the connection cap the connection idle longest makes room, past it 503",
          "[serve][e2e]") {
    // HTTP on the supervising thread: the accept of a new connection then comes after the
    // previous response's connection went back to waiting for a request. With HTTP threads,
    // a connection whose response the client has just read may still be finishing its write
    // on its own thread when the next connection is accepted, so it cannot be evicted yet.
    server_process server({"--max-connections", "2", "--http-threads", "0"});
    // Two kept-alive connections, a served first.
    connection a(server.port()), b(server.port());
    a.send("GET", "/v2/health/live");
    CHECK_THAT(a.receive(), Catch::StartsWith("HTTP/1.1 200"));
    b.send("GET", "/v2/health/live");
    CHECK_THAT(b.receive(), Catch::StartsWith("HTTP/1.1 200"));
    // A third: a, idle longest, is closed to make room, and the third is served.
    connection c(server.port());
    c.send("GET", "/v2/health/live");
    CHECK_THAT(c.receive(), Catch::StartsWith("HTTP/1.1 200"));
    CHECK(a.receive().empty());
    b.send("GET", "/v2/health/live");
    CHECK_THAT(b.receive(), Catch::StartsWith("HTTP/1.1 200"));
    // Two connections in the middle of their requests cannot be closed for room (b and c make
    // it for them): a third is answered 503 and closed.
    connection x(server.port());
    x.send_raw("GET /v2/health/live HTTP/1.1\r\n");
    connection y(server.port());
    y.send_raw("GET /v2/health/live HTTP/1.1\r\n");
    connection z(server.port());
    z.send("GET", "/v2/health/live");
    const auto refused = z.receive();
    CHECK_THAT(refused, Catch::StartsWith("HTTP/1.1 503"));
    CHECK_THAT(refused, Catch::Contains("--max-connections"));
    CHECK_THAT(refused, Catch::Contains("Retry-After: 1"));
    CHECK(z.receive().empty());
    CHECK(b.receive().empty());
    CHECK(c.receive().empty());
    x.send_raw("Host: test\r\n\r\n");  // x and y end their heads, and are served
    CHECK_THAT(x.receive(), Catch::StartsWith("HTTP/1.1 200"));
    y.send_raw("Host: test\r\n\r\n");
    CHECK_THAT(y.receive(), Catch::StartsWith("HTTP/1.1 200"));
    x.send("GET", "/metrics");  // on a connection of its own: z may still be closing
    const auto scrape = x.receive();
    CHECK_THAT(scrape,
               Catch::Contains(R"(torchpool_http_connections_cut_total{reason="evicted"} 3)"));
    CHECK(WIFEXITED(server.terminate()));
}

namespace {

// The processes whose parent is `parent` (the server's workers, its fork server and the fork
// server's helpers: the fork server starts workers as its siblings).
std::vector<pid_t> children_of(pid_t parent) {
    std::vector<pid_t> found;
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
        const auto name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        std::ifstream stat(entry.path() / "stat");
        std::string line;
        std::getline(stat, line);
        const auto close = line.rfind(')');
        if (close == std::string::npos) {
            continue;
        }
        std::istringstream rest(line.substr(close + 2));
        char state = 0;
        pid_t ppid = 0;
        rest >> state >> ppid;
        if (ppid == parent && state != 'Z') {
            found.push_back(std::stoi(name));
        }
    }
    return found;
}

}  // namespace

TEST_CASE("processes SIGKILLed at random under load fail only the requests they ran",
          "[serve][e2e][chaos]") {
    // Every request takes 100 ms in its worker (a delay fault), so the workers are busy when
    // the kills come: a kill nearly always lands on a batch that runs.
    server_process server({"--max-batch", "8", "--fault-injection"});
    const tensor image = test::fashion_test_images(1);
    const tensor expected = test::run_in_process(TORCHPOOL_DEFAULT_MODEL, "forward", image);
    const auto* want = reinterpret_cast<const float*>(expected.data.data());
    auto body = json::parse(infer_body(image, "load")).as_object();
    body["parameters"] = json::object{{"torchpool_fault", "delay"}};
    const std::string request = json::serialize(body);

    constexpr int clients = 16, total = 240, kill_every = 16;
    std::vector<std::unique_ptr<connection>> open;
    for (int c = 0; c < clients; ++c) {
        open.push_back(std::make_unique<connection>(server.port()));
        open.back()->send("POST", "/v2/models/fashion/infer", request);
    }
    std::mt19937 random(20261126);
    int sent = clients, answered = 0, ok = 0, died = 0, kills = 0;
    while (answered < total) {
        std::vector<pollfd> waiting;
        for (const auto& c : open) {
            waiting.push_back({c->fd(), POLLIN, 0});
        }
        // No answer within a minute is a hang: the test fails rather than waits forever.
        REQUIRE(::poll(waiting.data(), waiting.size(), 60'000) > 0);
        for (std::size_t c = 0; c < open.size(); ++c) {
            if (!(waiting[c].revents & (POLLIN | POLLHUP))) {
                continue;
            }
            const std::string answer = open[c]->receive();
            INFO("answer: " << answer);
            REQUIRE(!answer.empty());  // the server never drops a connection
            ++answered;
            const auto json_at = answer.find("\r\n\r\n") + 4;
            if (answer.starts_with("HTTP/1.1 200")) {
                ++ok;
                auto v = json::parse(answer.substr(json_at)).as_object();
                const auto& logits = v["outputs"].as_array()[0].as_object()["data"].as_array();
                REQUIRE(logits.size() == 10);
                for (std::size_t i = 0; i < 10; ++i) {
                    CHECK(std::abs(logits[i].to_number<double>() - want[i]) < 1e-4);
                }
            } else {
                // Only a death fails a request, and its answer says which.
                CHECK_THAT(answer, Catch::StartsWith("HTTP/1.1 500"));
                CHECK_THAT(answer, Catch::Contains("SIGKILL"));
                ++died;
            }
            if (sent < total) {
                open[c]->send("POST", "/v2/models/fashion/infer", request);
                ++sent;
            }
            if (answered % kill_every == 0 && answered < total - clients) {
                // A random process of the server's: a worker, the fork server or its helper.
                const auto victims = children_of(server.pid());
                REQUIRE(!victims.empty());
                ::kill(victims[random() % victims.size()], SIGKILL);
                ++kills;
            }
        }
    }
    INFO("server output: " << server.output());
    // The server stays up and ready, and serves.
    const auto after = curl("POST", server.url("/v2/models/fashion/infer"), infer_body(image, "x"));
    CHECK(after.status == 200);
    CHECK(curl("GET", server.url("/v2/health/ready")).status == 200);
    const auto metrics = curl("GET", server.url("/metrics")).body;
    INFO("metrics: " << metrics);
    // Kills landed on running batches (whose requests then ran again alone, each once).
    CHECK_THAT(metrics, !Catch::Contains(
                            R"(torchpool_tasks_total{model="fashion",outcome="worker_died"} 0)"));
    CHECK(ok + died == total);
    CHECK(ok > died);
    std::printf(
        "chaos over HTTP: %d requests, %d kills, %d answered 200, %d failed with the death\n",
        total, kills, ok, died);
    CHECK(WIFEXITED(server.terminate()));
}
