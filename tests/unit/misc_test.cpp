// Small pieces: the log tail, restart delays, the error category, parameter checks,
// fingerprints and faults.
#include "core/backoff.hpp"
#include "core/log_tail.hpp"
#include <torchpool/error.hpp>
#include <torchpool/pool.hpp>
#include <torchpool/task.hpp>

#include <boost/asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <signal.h>

using namespace torchpool;
using namespace std::chrono_literals;

TEST_CASE("the log tail keeps the last bytes, starting at a line boundary", "[log_tail]") {
    core::log_tail log(16);
    log.append("first line\n");
    CHECK(log.text() == "first line\n");
    log.append("second line\nthird\n");
    // 29 bytes written, 16 kept ("cond line\nthird\n"); the cut first line is dropped.
    CHECK(log.text() == "third\n");
    log.append(std::string(100, 'x'));
    CHECK(log.text().size() == 16);
    log.clear();
    CHECK(log.text().empty());
}

TEST_CASE("restart delays grow per failure, are capped, and are jittered", "[backoff]") {
    backoff_params p{.initial = 100ms, .max = 1000ms, .multiplier = 2, .jitter = 0.1};
    core::random_source random(1);
    CHECK(core::restart_delay(p, 0, random) == 0ms);
    for (int i = 0; i < 100; ++i) {
        auto d1 = core::restart_delay(p, 1, random);
        CHECK(d1 >= 90ms);
        CHECK(d1 <= 110ms);
        auto d3 = core::restart_delay(p, 3, random);
        CHECK(d3 >= 360ms);
        CHECK(d3 <= 440ms);
        CHECK(core::restart_delay(p, 50, random) <= 1000ms);
    }
    backoff_params zero{.initial = 0ms, .max = 0ms};
    CHECK(core::restart_delay(zero, 1, random) >= 1ms);  // never a tight loop
}

TEST_CASE("errors have messages and group into conditions", "[error]") {
    boost::system::error_code died = errc::worker_died;
    CHECK(died.category().name() == std::string("torchpool"));
    CHECK(died.message() == "the worker running the task died");
    CHECK(died == condition::worker_failure);
    CHECK(died == condition::retryable);
    CHECK(died != condition::overload);
    boost::system::error_code full = errc::overloaded;
    CHECK(full == condition::overload);
    CHECK(full != condition::worker_failure);
    boost::system::error_code failed = errc::task_failed;
    CHECK(failed != condition::retryable);
    for (int e = 1; e <= static_cast<int>(errc::frame_truncated); ++e) {
        CHECK_THAT(make_error_code(static_cast<errc>(e)).message(),
                   !Catch::Contains("unknown torchpool error"));
    }
}

TEST_CASE("signal and dtype names read as people expect", "[task]") {
    CHECK(signal_name(SIGKILL) == "SIGKILL");
    CHECK(signal_name(SIGSEGV) == "SIGSEGV");
    CHECK(signal_name(1000) == "signal 1000");
    CHECK(element_size(dtype::float64) == 8);
    CHECK(element_size(dtype::bfloat16) == 2);
    CHECK(std::string(dtype_name(dtype::boolean)) == "bool");
}

TEST_CASE("parameters that cannot work are refused, naming the field", "[params]") {
    boost::asio::io_context io;
    const auto refused = [&](pool_params p) -> std::string {
        try {
            pool(io.get_executor(), std::move(p));
        } catch (const std::invalid_argument& e) {
            return e.what();
        }
        return "accepted";
    };
    const pool_params good{.worker = {.executable = "/bin/true"}};
    auto p = good;
    p.worker.executable.clear();
    CHECK_THAT(refused(p), Catch::Contains("executable"));
    p = good;
    p.workers = 0;
    CHECK_THAT(refused(p), Catch::Contains("workers"));
    p = good;
    p.queue_limit = 0;
    CHECK_THAT(refused(p), Catch::Contains("queue_limit"));
    p = good;
    p.faults.choose = [](const fault_target&) { return fault::hang(); };
    CHECK_THAT(refused(p), Catch::Contains("faults.enabled"));
    p.faults.enabled = true;
    CHECK(refused(p) == "accepted");
}

TEST_CASE("a fingerprint depends on what a request asks, not on its options", "[task]") {
    tensor t(dtype::float32, {2}, std::string(8, '\1'));
    const auto base = fingerprint(request("forward", "p", {t}));
    CHECK(fingerprint(request("forward", "p", {t}).with_retries(3).with_timeout(5ms)) == base);
    CHECK(fingerprint(request("forward", "q", {t})) != base);
    CHECK(fingerprint(request("other", "p", {t})) != base);
    tensor u = t;
    u.data[3] = '\2';
    CHECK(fingerprint(request("forward", "p", {u})) != base);
    u = t;
    u.shape = {1, 2};
    CHECK(fingerprint(request("forward", "p", {u})) != base);
    CHECK(base != 0);
}

TEST_CASE("faults say what they do", "[task]") {
    CHECK(describe_fault(fault::crash(SIGSEGV)) == "crash with SIGSEGV");
    CHECK(describe_fault(fault::exit(3)) == "exit with code 3");
    CHECK(describe_fault(fault::leak(64u << 20)) == "leak 64 MiB");
    CHECK(describe_fault(fault::delay(250ms)) == "answer 250 ms late");
    CHECK_FALSE(fault{});
    CHECK(fault::hang());
}
