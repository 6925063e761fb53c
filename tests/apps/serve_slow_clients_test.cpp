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

// The attacks by name, each of 300 connections opened at 300 a second, for at most `seconds`.
std::vector<std::unique_ptr<attack>> launch(const std::vector<std::string>& names,
                                            const std::filesystem::path& dir, int port,
                                            int seconds) {
    const auto url = "http://127.0.0.1:" + std::to_string(port);
    std::vector<std::unique_ptr<attack>> attacks;
    for (const auto& name : names) {
        std::vector<std::string> args;
        if (name == "slowloris") {
            // A head never finished: a field more each second.
            args = {"-H", "-i", "1", "-u", url + "/v2/health/ready"};
        } else if (name == "slow-body") {
            // A body of 8 KiB announced, a few bytes of it each second.
            args = {"-B", "-i", "1", "-s", "8192", "-u", url + "/v2/models/fashion/infer"};
        } else {
            // Eight pipelined scrapes, read 16 bytes every 2 s through a window of 16-64.
            args = {"-X",
                    "-k",
                    "8",
                    "-w",
                    "16",
                    "-y",
                    "64",
                    "-n",
                    "2",
                    "-z",
                    "16",
                    "-u",
                    url + "/metrics"};
        }
        args.insert(args.end(),
                    {"-c", "300", "-r", "300", "-l", std::to_string(seconds), "-p", "3"});
        attacks.push_back(std::make_unique<attack>(dir, name, std::move(args)));
    }
    return attacks;
}

struct phase {
    probes during;
    double most_open = 0;  // connections, as the server counted them
};

// Probes every 20 ms (a schedule, so that the probes' own connections do not run the client
// out of ports) while any of `attacks` runs.
phase probe_while(std::vector<std::unique_ptr<attack>>& attacks, int port,
                  const std::string& infer) {
    phase p;
    const auto start = clock_type::now();
    while (clock_type::now() < start + std::chrono::seconds(60) &&
           std::any_of(attacks.begin(), attacks.end(), [](auto& a) { return a->running(); })) {
        std::this_thread::sleep_until(start + p.during.sent * std::chrono::milliseconds(20));
        probe(port, infer, p.during);
        if (p.during.sent % 20 == 0) {
            if (auto open = sample(scrape(port), "torchpool_http_connections")) {
                p.most_open = std::max(p.most_open, *open);
            }
        }
    }
    return p;
}

}  // namespace

TEST_CASE("300 slowloris, 300 slow-body and 300 slow-read connections lock nobody out",
          "[serve][e2e][slow]") {
    server_process server({});  // the defaults: they must hold
    const int port = server.port();
    const auto infer = infer_body(torchpool::test::fashion_test_images(1), "probe");

    // The same probes at the same pace first, without an attack.
    probes before;
    const auto start = clock_type::now();
    for (int i = 0; i < 150; ++i) {
        std::this_thread::sleep_until(start + i * std::chrono::milliseconds(20));
        probe(port, infer, before);
    }
    REQUIRE(before.succeeded == before.sent);
    std::printf("slow clients: no attack: %d/%d probes succeeded, p50 %.2f ms, p99 %.2f ms\n",
                before.succeeded, before.sent, before.percentile(0.5), before.percentile(0.99));

    const auto dir = std::filesystem::temp_directory_path() /
                     ("torchpool-slow-clients-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    // Each attack alone, then all three at once.
    const std::vector<std::vector<std::string>> phases = {
        {"slowloris"}, {"slow-body"}, {"slow-read"}, {"slowloris", "slow-body", "slow-read"}};
    for (const auto& names : phases) {
        auto attacks = launch(names, dir, port, 12);
        auto p = probe_while(attacks, port, infer);
        std::string what;
        for (const auto& n : names) {
            what += (what.empty() ? "" : " + ") + n;
        }
        const double success = p.during.sent ? 1.0 * p.during.succeeded / p.during.sent : 0;
        std::printf(
            "slow clients: %s: %d/%d probes succeeded (%.2f%%), p50 %.2f ms, p99 %.2f "
            "ms; at most %.0f connections open\n",
            what.c_str(), p.during.succeeded, p.during.sent, 100 * success,
            p.during.percentile(0.5), p.during.percentile(0.99), p.most_open);
        INFO(what);
        for (auto& a : attacks) {
            CHECK_FALSE(a->running());  // each ended within its time
            CHECK(WIFEXITED(a->status()));
            CHECK(a->most_connected() >= 290);  // the attack took hold: its connections were open
        }
        CHECK(p.most_open >= 250.0 * static_cast<double>(names.size()));  // open at once
        CHECK(p.during.sent >= 100);
        CHECK(success >= 0.99);
    }
    // Slowloris and slow bodies were cut at their stage's deadline, twice each. (On loopback
    // the kernel's send buffer takes a slow reader's eight responses whole, so its connections
    // wait as idle keep-alive ones; a reader that stalls the server's writes is cut in
    // serve_test.cpp.)
    const auto after = scrape(port);
    INFO("the server's metrics after the attacks:\n" << after);
    const auto cut = sample(after, R"(torchpool_http_connections_cut_total{reason="deadline"})");
    REQUIRE(cut);
    CHECK(*cut >= 1200);
    std::filesystem::remove_all(dir);
    CHECK(WIFEXITED(server.terminate()));
}
