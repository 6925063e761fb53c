// Slow clients against the real server, with the tool of the field: Debian's slowhttptest runs
// a slowloris, a slow-body and a slow-read attack of 300 connections each, all at once, while
// this test sends normal requests (a new connection's readiness probe, then an inference on it)
// and measures how many succeed and how fast, beside the same probes before the attack.
#include "../process/torch_reference.hpp"
#include "serve_harness.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <spawn.h>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/wait.h>

using namespace serve_test;
using clock_type = std::chrono::steady_clock;

namespace {

// One slowhttptest run, as a child process; its statistics go to a CSV file.
class attack {
public:
    attack(const std::filesystem::path& dir, const std::string& name, std::vector<std::string> args)
        : csv_(dir / (name + ".csv")) {
        args.insert(args.begin(), "slowhttptest");
        args.insert(args.end(), {"-g", "-o", (dir / name).string()});
        std::vector<char*> argv;
        for (auto& a : args) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, (dir / (name + ".log")).c_str(),
                                         O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        REQUIRE(::posix_spawnp(&pid_, "slowhttptest", &actions, nullptr, argv.data(), environ) ==
                0);
        posix_spawn_file_actions_destroy(&actions);
    }
    ~attack() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    bool running() {
        if (pid_ > 0 && ::waitpid(pid_, &status_, WNOHANG) == pid_) {
            pid_ = 0;
        }
        return pid_ > 0;
    }
    int status() const { return status_; }
    /// The most connections it had open at once (its CSV: seconds, closed, pending, connected,
    /// service available).
    int most_connected() const {
        std::ifstream in(csv_);
        std::string line;
        std::getline(in, line);  // the header
        int most = 0;
        while (std::getline(in, line)) {
            int seconds = 0, closed = 0, pending = 0, connected = 0;
            if (std::sscanf(line.c_str(), "%d,%d,%d,%d", &seconds, &closed, &pending, &connected) ==
                4) {
                most = std::max(most, connected);
            }
        }
        return most;
    }

private:
    std::filesystem::path csv_;
    pid_t pid_ = 0;
    int status_ = 0;
};

struct probes {
    int sent = 0;
    int succeeded = 0;
    std::vector<double> ms;  // of each that succeeded

    double percentile(double p) {
        if (ms.empty()) {
            return 0;
        }
        std::sort(ms.begin(), ms.end());
        return ms[std::min(ms.size() - 1, static_cast<std::size_t>(p * ms.size()))];
    }
};

// A normal client: a new connection, GET /v2/health/ready, then on the same connection an
// inference of one image. It succeeds if both are answered 200 within 2 s each.
void probe(int port, const std::string& infer, probes& into) {
    const auto began = clock_type::now();
    ++into.sent;
    connection c(port);
    c.set_timeout(2000);
    c.send("GET", "/v2/health/ready");
    if (c.receive().rfind("HTTP/1.1 200", 0) != 0) {
        return;
    }
    c.send("POST", "/v2/models/fashion/infer", infer);
    if (c.receive().rfind("HTTP/1.1 200", 0) != 0) {
        return;
    }
    ++into.succeeded;
    into.ms.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - began).count());
}

// The value of a sample line `name` in a Prometheus text scrape.
std::optional<double> sample(const std::string& scrape, const std::string& name) {
    const auto at = scrape.find("\n" + name + " ");
    if (at == std::string::npos) {
        return std::nullopt;
    }
    return std::stod(scrape.substr(at + name.size() + 2));
}

std::string scrape(int port) {
    connection c(port);
    c.set_timeout(2000);
    c.send("GET", "/metrics");
    return c.receive();
}

}  // namespace

TEST_CASE("300 slowloris, 300 slow-body and 300 slow-read connections lock nobody out",
          "[serve][e2e][slow]") {
    server_process server({});  // the defaults: they must hold
    const int port = server.port();
    const auto infer = infer_body(torchpool::test::fashion_test_images(1), "probe");

    probes before;
    for (int i = 0; i < 100; ++i) {
        probe(port, infer, before);
    }
    REQUIRE(before.succeeded == before.sent);

    const auto dir = std::filesystem::temp_directory_path() /
                     ("torchpool-slow-clients-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto url = "http://127.0.0.1:" + std::to_string(port);
    // Each: 300 connections opened at 300 a second; at most 20 s.
    const std::vector<std::string> common = {"-c", "300", "-r", "300", "-l", "20", "-p", "3"};
    const auto with = [&](std::vector<std::string> own) {
        own.insert(own.end(), common.begin(), common.end());
        return own;
    };
    std::vector<std::unique_ptr<attack>> attacks;
    // Slowloris: a head never finished, a field more each second.
    attacks.push_back(std::make_unique<attack>(
        dir, "slowloris", with({"-H", "-i", "1", "-u", url + "/v2/health/ready"})));
    // Slow body: a body of 8 KiB announced, a few bytes of it each second.
    attacks.push_back(std::make_unique<attack>(
        dir, "slow-body",
        with({"-B", "-i", "1", "-s", "8192", "-u", url + "/v2/models/fashion/infer"})));
    // Slow read: eight pipelined scrapes, read 16 bytes every 2 s through a window of 16-64.
    attacks.push_back(std::make_unique<attack>(dir, "slow-read",
                                               with({"-X", "-k", "8", "-w", "16", "-y", "64", "-n",
                                                     "2", "-z", "16", "-u", url + "/metrics"})));

    // A probe every 20 ms (a schedule, so that the probes' own connections do not run the
    // client out of ports), until every attack has ended.
    probes during;
    double most_open = 0;
    const auto start = clock_type::now();
    while (clock_type::now() < start + std::chrono::seconds(60) &&
           std::any_of(attacks.begin(), attacks.end(), [](auto& a) { return a->running(); })) {
        std::this_thread::sleep_until(start + during.sent * std::chrono::milliseconds(20));
        probe(port, infer, during);
        if (during.sent % 20 == 0) {
            if (auto open = sample(scrape(port), "torchpool_http_connections")) {
                most_open = std::max(most_open, *open);
            }
        }
    }
    const auto after = scrape(port);
    const double success = during.sent ? 1.0 * during.succeeded / during.sent : 0;
    std::printf(
        "slow clients: before the attack %d/%d probes succeeded, p50 %.2f ms, p99 %.2f ms; "
        "during it %d/%d (%.2f%%), p50 %.2f ms, p99 %.2f ms; at most %.0f connections "
        "open\n",
        before.succeeded, before.sent, before.percentile(0.5), before.percentile(0.99),
        during.succeeded, during.sent, 100 * success, during.percentile(0.5),
        during.percentile(0.99), most_open);
    for (const auto* name : {"slowloris", "slow-body", "slow-read"}) {
        std::ifstream csv(dir / (std::string(name) + ".csv"));
        std::printf("%s (seconds, closed, pending, connected):\n%s\n", name,
                    std::string(std::istreambuf_iterator<char>(csv), {}).c_str());
    }
    INFO("the server's metrics after the attack:\n" << after);
    for (auto& a : attacks) {
        CHECK_FALSE(a->running());  // each ended within its 20 s
        CHECK(WIFEXITED(a->status()));
        CHECK(a->most_connected() >= 290);  // the attack took hold: its connections were open
    }
    CHECK(most_open >= 600);  // the three attacks' connections were open at once
    CHECK(during.sent >= 100);
    CHECK(success >= 0.99);
    // Slowloris and slow bodies were cut at their stage's deadline. (On loopback the kernel's
    // send buffer takes a slow reader's eight responses whole, so its connections wait as idle
    // keep-alive ones; a reader that stalls the server's writes is cut in serve_test.cpp.)
    const auto cut = sample(after, R"(torchpool_http_connections_cut_total{reason="deadline"})");
    REQUIRE(cut);
    CHECK(*cut >= 600);
    std::filesystem::remove_all(dir);
    CHECK(WIFEXITED(server.terminate()));
}
