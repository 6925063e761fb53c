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
        REQUIRE(metrics_show(server, R"(torchpool_workers{model="fashion",state="busy"} 2)"));
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
    REQUIRE(metrics_show(server, R"(torchpool_batch_waiting{model="fashion"} 8)"));
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
    REQUIRE(metrics_show(server, R"(torchpool_batch_waiting{model="fashion"} 4)"));
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
    REQUIRE(metrics_show(server, R"(torchpool_batch_waiting{model="fashion"} 1)"));
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
