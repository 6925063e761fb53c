// torchpool-serve end to end, its HTTP side: the rules clients and proxies rely on, the metrics,
// slow and idle clients, the connection cap, and processes killed under load. The real server
// on a free loopback port, curl and raw connections, real Fashion-MNIST test images.
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
    // A slow body of binary data (Triton's extension), past its JSON header: the server reads
    // such data from the socket straight into input memory, under the same deadline.
    connection slow_binary(server.port());
    slow_binary.send_raw(
        "POST /v2/models/fashion/infer HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n"
        "Inference-Header-Content-Length: 2\r\n\r\n{}\x01");
    // Kept alive after its answer, then idle.
    connection idle(server.port());
    idle.send("GET", "/v2/health/live");
    CHECK_THAT(idle.receive(), Catch::StartsWith("HTTP/1.1 200"));
    CHECK(silent.receive().empty());  // each is closed by the server
    CHECK(slow_head.receive().empty());
    CHECK(slow_body.receive().empty());
    CHECK(slow_binary.receive().empty());
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
    CHECK(metrics_show(server, R"(torchpool_http_connections_cut_total{reason="deadline"} 6)"));
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
