// The report: events only for a host that observes them, and the wording of diagnostics;
// the actions it and every other unit produce print and compare.
#include "core/report.hpp"

#include "recorder.hpp"
#include <torchpool/error.hpp>

#include <boost/asio/error.hpp>

#include <catch2/catch.hpp>

#include <sstream>

#include <signal.h>

using namespace torchpool;
using namespace torchpool::core;
using namespace torchpool::core::test;
using namespace std::chrono_literals;

namespace {
template <class T>
std::string printed(const T& value) {
    std::ostringstream os;
    os << value;
    return os.str();
}
}  // namespace

TEST_CASE("facts are counted always, and become events only when the host observes them",
          "[report]") {
    action_queue out;
    report quiet(false, out);
    quiet.apply(facts::worker_spawned{.slot = 1, .pid = 42});
    CHECK(out.empty());
    CHECK(quiet.counters().spawned == 1);

    report loud(true, out);
    loud.apply(facts::worker_spawned{.slot = 1, .pid = 42});
    CHECK(take(out) == std::vector<action>{notify_action{
                           {worker_event::kind::started, 1, 42, "worker 42 started"}}});
    CHECK(loud.counters().spawned == 1);

    // A readiness that ends degradation is told after the readiness itself.
    loud.apply(facts::worker_ready{
        .slot = 1, .pid = 42, .started = t0, .now = t0 + 250ms, .recovered = true});
    CHECK(take(out) ==
          std::vector<action>{
              notify_action{{worker_event::kind::ready, 1, 42,
                             "worker 42 is ready, 250 ms after it started"}},
              notify_action{{worker_event::kind::recovered, 1, 42,
                             "the pool has recovered: worker 42 started and is ready, so tasks "
                             "are accepted again"}}});

    // What comes next for a slot is part of its exit's event.
    loud.apply(
        facts::worker_exited{.slot = 1,
                             .pid = 42,
                             .how = "was killed by signal SIGKILL",
                             .was = "idle",
                             .next = {.state = child_state::backoff, .at = t0 + 96ms, .now = t0}});
    CHECK(take(out) ==
          std::vector<action>{notify_action{
              {worker_event::kind::exited, 1, 42,
               "worker 42 was killed by signal SIGKILL while idle; restarting in 96 ms"}}});
    loud.apply(facts::restart_paced{
        .paced = true, .began = false, .ended = false, .intensity = 5, .period = 1000ms});
    CHECK(out.empty());  // counted only
    CHECK(loud.counters().paced_restarts == 1);
}

TEST_CASE("durations, exits, memory and output are said in plain words", "[report]") {
    CHECK(format_duration(250ms) == "250 ms");
    CHECK(format_duration(1500ms) == "1.5 s");
    CHECK(format_elapsed(t0, t0 + 3s) == "3.0 s");

    CHECK(describe_exit({.signal = SIGSEGV, .core_dumped = true}) ==
          "was killed by signal SIGSEGV (core dumped)");
    CHECK(describe_exit({.signal = SIGKILL}) == "was killed by signal SIGKILL");
    CHECK(describe_exit({.exit_code = 3}) == "exited with code 3");
    CHECK(describe_exit({}) == "ended");

    CHECK(describe_memory(worker_memory{
              .private_bytes = 8 << 20, .pss_bytes = 9 << 20, .rss_bytes = 20 << 20}) ==
          "; just before, it held 8.0 MiB of its own (private; PSS 9.0 MiB, RSS 20.0 MiB)");
    CHECK(describe_memory(std::nullopt).empty());

    CHECK(describe_output("loading\nout of memory\n\n") ==
          " Its last output line: \"out of memory\".");
    CHECK(describe_output("") == " It wrote nothing to stdout or stderr.");

    const std::string method = "crash";
    CHECK(describe_task(7, &method) == "task 7 ('crash')");
    CHECK(describe_task(7, nullptr) == "task 7");
}

TEST_CASE("actions print themselves and compare by what the driver acts on", "[report]") {
    CHECK(printed(action(signal_action{3, SIGTERM})) == "signal{slot 3, SIGTERM}");
    CHECK(printed(action(send_request_action{1, 7})) == "send_request{slot 1, task 7}");
    CHECK(printed(action(stop_server_action{true})) == "stop_server{kill}");
    CHECK(printed(action(run_finished_action{})) == "run_finished{}");

    const auto done = [](const char* summary) {
        return complete_action{
            7, errc::timeout,
            std::make_shared<response>(response{.diagnostics = {.summary = summary}})};
    };
    CHECK(action(done("late")) == action(done("late")));
    CHECK_FALSE(action(done("late")) == action(done("early")));
    CHECK_FALSE(action(signal_action{3, SIGTERM}) == action(signal_action{3, SIGKILL}));
    CHECK_THAT(printed(action(done("late"))),
               Catch::StartsWith("complete{task 7, ") && Catch::EndsWith(", \"late\"}"));
}

TEST_CASE("a SIGKILL nobody in the pool sent is reported with the memory evidence there is",
          "[report]") {
    const memory_params limits{.hard_limit_bytes = 100u << 20};
    const worker_memory near{.private_bytes = 90u << 20};
    const machine_memory tight{.available_bytes = 12u << 20, .full_pressure = 37.5};
    const exit_status killed{.signal = SIGKILL};

    CHECK(oom_evidence(killed, near, limits, tight) ==
          " Its memory, when last read, was 90.0 MiB of its own, near its hard limit of 100.0 "
          "MiB: the kernel's OOM killer may have killed it. When it died the machine had 12.0 "
          "MiB available, and every task was stalled on memory 37.5% of the last 10 s (PSI).");
    // Far from its limit: only the machine's figures.
    CHECK(oom_evidence(killed, worker_memory{.private_bytes = 10u << 20}, limits,
                       {.available_bytes = 2048u << 20}) ==
          " When it died the machine had 2048.0 MiB available.");
    // Another signal, or an OOM kill known for certain: nothing to guess.
    CHECK(oom_evidence({.signal = SIGSEGV}, near, limits, tight).empty());
    CHECK(oom_evidence({.signal = SIGKILL, .oom_killed = true}, near, limits, tight).empty());
}

TEST_CASE("latency histograms count durations in fixed buckets and estimate quantiles",
          "[report][histogram]") {
    latency_histogram h;
    CHECK(h.quantile_us(0.5) == 0);
    h.add(std::chrono::microseconds(30));   // below 50 µs
    h.add(std::chrono::microseconds(50));   // at a bound: the next bucket
    h.add(std::chrono::microseconds(700));  // below 1 ms
    h.add(std::chrono::microseconds(-5));   // a clock step back counts as 0
    h.add(std::chrono::seconds(100));       // past the last bound
    CHECK(h.count == 5);
    CHECK(h.counts[0] == 2);
    CHECK(h.counts[1] == 1);
    CHECK(h.counts[4] == 1);
    CHECK(h.counts[latency_histogram::buckets - 1] == 1);
    CHECK(h.sum_us == 30 + 50 + 700 + 100'000'000);
    CHECK(h.quantile_us(0.0) == 50);
    CHECK(h.quantile_us(0.5) == 100);
    CHECK(h.quantile_us(0.75) == 1'000);
    CHECK(h.quantile_us(1.0) == 60'000'000);
}

TEST_CASE("a task's end is counted once, by its outcome", "[report]") {
    using boost::system::error_code;
    const std::vector<std::pair<error_code, std::uint64_t pool_stats::*>> outcomes = {
        {error_code{}, &pool_stats::succeeded},
        {boost::asio::error::operation_aborted, &pool_stats::cancelled},
        {make_error_code(errc::task_failed), &pool_stats::task_failed},
        {make_error_code(errc::timeout), &pool_stats::timed_out},
        {make_error_code(errc::worker_died), &pool_stats::worker_died},
        {make_error_code(errc::memory_limit), &pool_stats::memory_limit},
        {make_error_code(errc::protocol_error), &pool_stats::protocol_errors},
        {make_error_code(errc::poison_task), &pool_stats::poison_tasks},
        {make_error_code(errc::overloaded), &pool_stats::overloaded},
        {make_error_code(errc::spawn_failed), &pool_stats::spawn_failed},
        {make_error_code(errc::shutting_down), &pool_stats::rejected},
        {make_error_code(errc::invalid_request), &pool_stats::rejected},
    };
    for (const auto& [error, counter] : outcomes) {
        CAPTURE(error.message());
        action_queue out;
        report r(false, out);
        r.task_ended(error);
        std::uint64_t total = 0;
        for (const auto& [unused, each] : outcomes) {
            total += r.counters().*each;
        }
        CHECK(r.counters().*counter == 1);
        CHECK(total == (counter == &pool_stats::rejected ? 2u : 1u));  // rejected is listed twice
    }
}
