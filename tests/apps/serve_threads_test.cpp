// torchpool-serve with HTTP on threads of its own (--http-threads), driven by concurrent
// clients of every kind at once: inferences (JSON, in shared-memory regions, cancelled by
// clients that leave, crashing their worker), metrics scrapes, readiness probes, regions
// registered and unregistered. The server serves the fake worker's echo (no LibTorch), so this
// runs in every build, ThreadSanitizer's included: there a race in the server kills it
// (halt_on_error), and its exit status says so.
#include "serve_harness.hpp"

#include <boost/json.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <netinet/in.h>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

namespace json = boost::json;
using serve_test::server_process;

// An echo "model": the fake worker returns its inputs, so each request's answer is its own
// rows, whatever batch they ran in.
std::string echo_model() {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("torchpool-serve-threads-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "echo.pt") << "the fake worker reads no model\n";
    std::ofstream(dir / "echo.json") << R"({"method": "echo",
              "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
              "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]})";
    return (dir / "echo.pt").string();
}

// A keep-alive HTTP client for the client threads: no Catch2 assertion here (they are not
// thread-safe), only results the test checks on its own thread.
class raw_client {
public:
    explicit raw_client(int port) : port_(port) {}
    ~raw_client() { close(); }

    /// The response (status line to body), or "" if the connection failed.
    std::string request(const std::string& method, const std::string& path,
                        const std::string& body = {}) {
        if (fd_ < 0 && !open()) {
            return {};
        }
        send_only(method, path, body);
        return receive();
    }
    /// Sends a request and leaves: the connection closes with the answer unread.
    void send_and_leave(const std::string& path, const std::string& body) {
        if (fd_ >= 0 || open()) {
            send_only("POST", path, body);
        }
        close();
    }

private:
    bool open() {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in at{};
        at.sin_family = AF_INET;
        at.sin_port = htons(static_cast<std::uint16_t>(port_));
        at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd_, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0) {
            close();
            return false;
        }
        return true;
    }
    void close() {
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
        data_.clear();
    }
    void send_only(const std::string& method, const std::string& path, const std::string& body) {
        std::string text = method + " " + path + " HTTP/1.1\r\nHost: test\r\n";
        if (!body.empty() || method == "POST") {
            text +=
                "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                "\r\n";
        }
        text += "\r\n" + body;
        for (std::size_t sent = 0; sent < text.size();) {
            const ssize_t n = ::send(fd_, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
            if (n <= 0) {
                return;
            }
            sent += static_cast<std::size_t>(n);
        }
    }
    std::string receive() {
        for (;;) {
            const auto end = data_.find("\r\n\r\n");
            if (end != std::string::npos) {
                const auto at = data_.find("Content-Length: ");
                const std::size_t length = at < end ? std::stoul(data_.substr(at + 16)) : 0;
                if (data_.size() >= end + 4 + length) {
                    std::string whole = data_.substr(0, end + 4 + length);
                    data_.erase(0, end + 4 + length);
                    if (whole.find("Connection: close") != std::string::npos) {
                        close();
                    }
                    return whole;
                }
            }
            char buf[16384];
            const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
            if (n <= 0) {
                close();
                return {};
            }
            data_.append(buf, static_cast<std::size_t>(n));
        }
    }

    int port_;
    int fd_ = -1;
    std::string data_;
};

std::string body_of(const std::string& response) {
    const auto end = response.find("\r\n\r\n");
    return end == std::string::npos ? std::string() : response.substr(end + 4);
}

// `rows` rows of 4 values, each telling the client, the round and its place.
std::vector<float> values_of(int client, int round, int rows) {
    std::vector<float> v;
    for (int i = 0; i < rows * 4; ++i) {
        v.push_back(static_cast<float>(client * 100000 + round * 100 + i));
    }
    return v;
}

json::object echo_request(const std::vector<float>& values) {
    json::array data;
    for (float f : values) {
        data.push_back(static_cast<double>(f));
    }
    return json::object{
        {"inputs", json::array{json::object{{"name", "x"},
                                            {"datatype", "FP32"},
                                            {"shape", json::array{values.size() / 4, 4}},
                                            {"data", std::move(data)}}}}};
}

// What went wrong in the client threads, for the test's own thread to report.
class problems {
public:
    void add(std::string what) {
        const std::lock_guard lock(mutex_);
        list_.push_back(std::move(what));
    }
    std::vector<std::string> take() {
        const std::lock_guard lock(mutex_);
        return std::exchange(list_, {});
    }

private:
    std::mutex mutex_;
    std::vector<std::string> list_;
};

// Infers `values` and checks the echo: its own rows back.
void infer_and_check(raw_client& c, const std::vector<float>& values, problems& wrong) {
    const auto response =
        c.request("POST", "/v2/models/echo/infer", json::serialize(echo_request(values)));
    if (response.rfind("HTTP/1.1 200", 0) != 0) {
        wrong.add("infer: " + response.substr(0, 300));
        return;
    }
    const auto out = json::parse(body_of(response)).as_object().at("outputs").as_array();
    const auto& data = out.at(0).as_object().at("data").as_array();
    if (data.size() != values.size()) {
        wrong.add("infer: " + std::to_string(data.size()) + " values back, not " +
                  std::to_string(values.size()));
        return;
    }
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (data[i].to_number<double>() != static_cast<double>(values[i])) {
            wrong.add("infer: value " + std::to_string(i) + " is another request's");
            return;
        }
    }
}

// A POSIX shared-memory object of this test's, mapped.
struct shm_object {
    explicit shm_object(std::string k) : key(std::move(k)) {
        const int fd = ::shm_open(key.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
        REQUIRE(fd >= 0);
        REQUIRE(::ftruncate(fd, bytes) == 0);
        base =
            static_cast<char*>(::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
        ::close(fd);
        REQUIRE(base != MAP_FAILED);
    }
    ~shm_object() {
        ::munmap(base, bytes);
        ::shm_unlink(key.c_str());
    }
    static constexpr std::size_t bytes = 4096;
    std::string key;
    char* base = nullptr;
};

// Registers a region of `shm`, infers through it (input at 0, output at 2048), unregisters it.
void infer_in_region(raw_client& c, const shm_object& shm, const std::string& region,
                     const std::vector<float>& values, problems& wrong) {
    auto r = c.request("POST", "/v2/systemsharedmemory/region/" + region + "/register",
                       json::serialize(json::object{{"key", shm.key}, {"byte_size", shm.bytes}}));
    if (r.rfind("HTTP/1.1 200", 0) != 0) {
        wrong.add("register: " + r.substr(0, 300));
        return;
    }
    const auto size = values.size() * sizeof(float);
    std::memcpy(shm.base, values.data(), size);
    std::memset(shm.base + 2048, 0, size);
    auto body = echo_request(values);
    auto& in = body["inputs"].as_array()[0].as_object();
    in.erase("data");
    in["parameters"] =
        json::object{{"shared_memory_region", region}, {"shared_memory_byte_size", size}};
    body["outputs"] =
        json::array{json::object{{"name", "y"},
                                 {"parameters", json::object{{"shared_memory_region", region},
                                                             {"shared_memory_offset", 2048},
                                                             {"shared_memory_byte_size", size}}}}};
    r = c.request("POST", "/v2/models/echo/infer", json::serialize(body));
    if (r.rfind("HTTP/1.1 200", 0) != 0) {
        wrong.add("infer in a region: " + r.substr(0, 300));
    } else if (std::memcmp(shm.base + 2048, values.data(), size) != 0) {
        wrong.add("infer in a region: the output region does not hold the request's rows");
    }
    r = c.request("POST", "/v2/systemsharedmemory/region/" + region + "/unregister");
    if (r.rfind("HTTP/1.1 200", 0) != 0) {
        wrong.add("unregister: " + r.substr(0, 300));
    }
}

}  // namespace

TEST_CASE("HTTP threads under concurrent clients of every kind: every answer right and no race",
          "[serve][threads]") {
    server_process server({"--worker", TORCHPOOL_FAKE_WORKER, "--model", "echo=" + echo_model(),
                           "--http-threads", "3", "--max-batch", "8", "--batch-delay-us", "300",
                           "--allow-shared-memory", "--fault-injection"});
    const int port = server.port();
    constexpr int rounds = 40;
    problems wrong;
    std::atomic<int> crashed_answers{0};
    std::vector<std::thread> clients;
    // Inferences of 1 to 3 rows, batched with each other's across threads.
    for (int id = 0; id < 4; ++id) {
        clients.emplace_back([&, id] {
            raw_client c(port);
            for (int round = 0; round < rounds; ++round) {
                infer_and_check(c, values_of(id, round, 1 + (round + id) % 3), wrong);
            }
        });
    }
    // Scrapes, probes and metadata, which read the pools' figures.
    clients.emplace_back([&] {
        raw_client c(port);
        for (int round = 0; round < rounds; ++round) {
            for (const char* path : {"/metrics", "/v2/models/echo", "/v2"}) {
                if (c.request("GET", path).rfind("HTTP/1.1 200", 0) != 0) {
                    wrong.add(std::string("GET ") + path + " was not answered 200");
                }
            }
            // Not ready (503) for a moment while a crashed worker is replaced.
            const auto ready = c.request("GET", "/v2/health/ready");
            if (ready.rfind("HTTP/1.1 200", 0) != 0 && ready.rfind("HTTP/1.1 503", 0) != 0) {
                wrong.add("readiness: " + ready.substr(0, 200));
            }
        }
    });
    // Regions registered, used and unregistered while others list them.
    clients.emplace_back([&] {
        const shm_object shm("/torchpool-threads-" + std::to_string(::getpid()));
        raw_client c(port);
        for (int round = 0; round < rounds; ++round) {
            infer_in_region(c, shm, "r" + std::to_string(round % 3), values_of(9, round, 2), wrong);
            c.request("GET", "/v2/systemsharedmemory/status");
        }
    });
    // Clients that leave as soon as their request is sent: the cancellation crosses from the
    // HTTP thread to the batcher's while the request completes (once a use after free).
    for (int id = 10; id < 12; ++id) {
        clients.emplace_back([&, id] {
            for (int round = 0; round < rounds * 2; ++round) {
                raw_client(port).send_and_leave(
                    "/v2/models/echo/infer",
                    json::serialize(echo_request(values_of(id, round, 1))));
            }
        });
    }
    // Clients that leave while their request runs (it is cancelled on the batcher's thread),
    // and requests that crash their worker (they alone fail).
    clients.emplace_back([&] {
        for (int round = 0; round < rounds / 4; ++round) {
            auto body = echo_request(values_of(7, round, 1));
            body["parameters"] = json::object{{"torchpool_fault", "delay"}};
            raw_client(port).send_and_leave("/v2/models/echo/infer", json::serialize(body));
            body["parameters"] = json::object{{"torchpool_fault", "crash"}};
            raw_client c(port);
            const auto r = c.request("POST", "/v2/models/echo/infer", json::serialize(body));
            if (r.rfind("HTTP/1.1 5", 0) == 0) {
                ++crashed_answers;
            } else {
                wrong.add("a request that crashed its worker got: " + r.substr(0, 300));
            }
        }
    });
    for (auto& t : clients) {
        t.join();
    }
    // Every answer was counted, on whichever thread it was given: those the clients read, and
    // those of clients that left once their request was sent that came before the leaving
    // was seen.
    const auto scrape = raw_client(port).request("GET", "/metrics");  // "" if the server died
    const std::string ok = R"(torchpool_http_requests_total{code="200",model="echo"} )";
    const auto at = scrape.find(ok);
    const int answered = at == std::string::npos ? -1 : std::stoi(scrape.substr(at + ok.size()));
    // The drain ends with exit 0: a race (ThreadSanitizer) or a memory error (AddressSanitizer)
    // would have killed the server with another status.
    const int status = server.terminate();
    INFO(server.output());
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    const auto problems = wrong.take();
    for (std::size_t i = 0; i < std::min<std::size_t>(problems.size(), 5); ++i) {
        FAIL_CHECK(problems[i]);
    }
    CHECK(problems.size() == 0);
    CHECK(crashed_answers == rounds / 4);
    CHECK(answered >= 5 * rounds);
    CHECK(answered <= 5 * rounds + 2 * 2 * rounds);
}
