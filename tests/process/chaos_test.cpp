// Chaos: tens of thousands of tasks through 32 workers while a thread of the host SIGKILLs a
// random worker every few milliseconds. The pool must neither lie nor lose anything: every
// task completes exactly once; an idempotent one (half of them, request::with_retries(10)) with
// its result, since it is run again when its worker is killed under it; any other with its
// result or with worker_died. No task is failed for want of workers (the machine can start
// them the whole time), none outlives its deadline; afterwards the pool is at full strength,
// with no zombie and no leaked descriptor.
//
// The assertions are exact whatever the machine; what depends on its speed follows the pace
// the pool shows in the same run, so that the test holds on a machine whose cores are busy
// with other work (ctest runs it beside a CPU hog too): first a calibration without kills
// measures the time per task and the time to replace killed workers; the kills then come at a
// pace the pool can follow (about an eighth of the workers down at a time), and the tasks'
// deadline is a multiple of the time they take without kills.
#include "../support/outside_killer.hpp"
#include "../support/process_support.hpp"
#include <torchpool/error.hpp>
#include <torchpool/pool.hpp>

#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>

#include <catch2/catch.hpp>

#include <map>
#include <vector>

using namespace torchpool;
using namespace torchpool::test;

namespace {

void chaos(start_mode mode) {
    constexpr int calibration_tasks = 2'000;
    constexpr int tasks = 20'000;
    constexpr std::size_t workers = 32;
    asio::io_context io{1};
    asio::steady_timer reactor_exists(io);
    const std::size_t fds_before = open_fd_count();
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    // A sanitized worker takes ten times as long to start.
    constexpr auto fastest_kills = 10ms;
#else
    constexpr auto fastest_kills = 2000us;
#endif
    outside_killer killer(fastest_kills, fastest_kills);
    std::vector<worker_event> events;
    std::size_t ready = 0;
    {
        notifier changed(io.get_executor());
        auto params = pool_params{.worker = fake_worker(),
                                  .workers = workers,
                                  .queue_limit = tasks,
                                  // The killer is random: a task killed under several times
                                  // is unlucky, not poison. A task may be hit four times in
                                  // 20,000, so poison detection is off.
                                  .poison = {.deaths = 0},
                                  .on_worker_event = [&](const worker_event& e) {
                                      events.push_back(e);
                                      ready += e.what == worker_event::kind::ready ? 1 : 0;
                                      killer.observe(e);
                                      changed.notify();
                                  }};
        params.worker.start = mode;
        pool p(io.get_executor(), params);
        p.async_run(asio::detached);

        std::vector<int> completions(calibration_tasks + tasks, 0);
        std::map<std::string, int> outcomes;
        int idempotent_failed = 0;
        int retried = 0;  // idempotent tasks that ran more than once and succeeded
        int done = 0;
        int late = 0;
        std::chrono::milliseconds deadline{0};
        std::chrono::steady_clock::duration per_task{}, replace_time{};
        std::chrono::steady_clock::time_point submitted;
        const auto submit = [&](int i, std::chrono::milliseconds timeout) {
            const bool idempotent = i % 2 == 1;
            auto req = make_request("echo", std::to_string(i)).with_timeout(timeout);
            if (idempotent) {
                req = std::move(req).with_retries(10);
            }
            p.async_submit(std::move(req),
                           [&, i, idempotent](boost::system::error_code ec, response r) {
                               ++completions[static_cast<std::size_t>(i)];
                               if (idempotent) {
                                   idempotent_failed += ec ? 1 : 0;
                                   retried += !ec && r.attempts.size() > 1 ? 1 : 0;
                               }
                               if (!ec && r.payload != std::to_string(i)) {
                                   ++outcomes["wrong payload"];
                               } else {
                                   ++outcomes[ec ? ec.message() : "ok"];
                               }
                               if (i >= calibration_tasks &&
                                   std::chrono::steady_clock::now() - submitted > deadline) {
                                   ++late;
                               }
                               ++done;
                               changed.notify();
                           });
        };
        run_coroutine_on(
            io,
            [&]() -> asio::awaitable<void> {
                // A service that is up, then is hit: every worker ready before the killing starts
                // (workers killed before any ever started would rightly make the pool degraded).
                // The bounds of these waits are failure limits, far above what a starved machine
                // needs.
                co_await changed.until([&] { return ready >= workers; }, 300s);
                // Calibration: the time per task, without kills...
                auto t0 = std::chrono::steady_clock::now();
                for (int i = 0; i < calibration_tasks; ++i) {
                    submit(i, 0ms);
                }
                co_await changed.until([&] { return done == calibration_tasks; }, 300s);
                per_task = (std::chrono::steady_clock::now() - t0) / calibration_tasks;
                // ...and the time to replace workers killed together.
                t0 = std::chrono::steady_clock::now();
                const std::size_t ready_before = ready;
                const std::size_t victims = killer.kill_now(4);
                co_await changed.until(
                    [&] {
                        return ready >= ready_before + victims && killer.all_exits_seen() &&
                               p.stats().workers_idle == workers;
                    },
                    300s);
                replace_time = std::chrono::steady_clock::now() - t0;
                // The chaos: a kill about every eighth of the time it takes to replace one, so
                // that some four workers are down at a time; the tasks' deadline six times what
                // they take without kills (at least 30 s).
                const auto pause =
                    std::max<std::chrono::steady_clock::duration>(fastest_kills, replace_time / 8);
                killer.set_pace(
                    std::chrono::duration_cast<std::chrono::microseconds>(pause),
                    std::chrono::duration_cast<std::chrono::microseconds>(pause * 5 / 2));
                deadline = std::max<std::chrono::milliseconds>(
                    30s, std::chrono::ceil<std::chrono::milliseconds>(6 * tasks * per_task));
                submitted = std::chrono::steady_clock::now();
                for (int i = calibration_tasks; i < calibration_tasks + tasks; ++i) {
                    submit(i, deadline);
                }
                killer.start();
                co_await changed.until([&] { return done == calibration_tasks + tasks; },
                                       deadline + 60s);
                killer.stop();
                // Back to full strength once the killing stops and every kill has been seen.
                co_await changed.until(
                    [&] { return killer.all_exits_seen() && p.stats().workers_idle == workers; },
                    300s);
            },
            1800s);  // a failure bound: the waits above end it long before

        const auto s = p.stats();
        INFO("outcomes: " << [&] {
            std::string text;
            for (const auto& [what, n] : outcomes) {
                text += what + " x" + std::to_string(n) + "; ";
            }
            return text;
        }());
        using micros = std::chrono::duration<double, std::micro>;
        using millis = std::chrono::duration<double, std::milli>;
        const double per_task_us = micros(per_task).count();
        const double replace_ms = millis(replace_time).count();
        INFO("measured: " << per_task_us << " us per task, " << replace_ms
                          << " ms to replace 4 workers; deadline " << deadline.count() << " ms");
        INFO("kills " << killer.kills() << ", retried runs " << s.retried << ", restarts "
                      << s.restarts << ", paced " << s.paced_restarts << ", failed starts "
                      << s.failed_starts << ", load extensions " << s.load_extensions);
        const int all = calibration_tasks + tasks;
        CHECK(std::all_of(completions.begin(), completions.end(), [](int n) { return n == 1; }));
        CHECK(outcomes["ok"] + outcomes[make_error_code(errc::worker_died).message()] == all);
        CHECK(outcomes["ok"] > all / 2);
        INFO("idempotent tasks that succeeded after a retry: " << retried);
        CHECK(idempotent_failed == 0);
        CHECK(retried > 0);
        CHECK(s.retried >= static_cast<std::uint64_t>(retried));
        CHECK(late == 0);
        CHECK(s.spawn_failed == 0);
        CHECK_FALSE(s.degraded);
        CHECK(killer.kills() >= 50);
        CHECK(s.worker_died ==
              static_cast<std::uint64_t>(outcomes[make_error_code(errc::worker_died).message()]));
        const auto zombies = zombie_children();
        for (const int z : zombies) {
            for (const auto& e : events) {
                if (e.pid == z || e.description.find(std::to_string(z)) != std::string::npos) {
                    UNSCOPED_INFO("zombie " << z << ": slot " << e.slot << " " << e.description);
                }
            }
        }
        CHECK(zombies.empty());

        run_coroutine_on(
            io, [&]() -> asio::awaitable<void> { co_await p.async_shutdown(tuple_awaitable); });
    }
    CHECK(child_pids().empty());
    CHECK(open_fd_count() == fds_before);
}

}  // namespace

TEST_CASE("chaos: 20,000 tasks through 32 direct workers SIGKILLed every few ms",
          "[process][chaos]") {
    chaos(start_mode::direct);
}

TEST_CASE("chaos: 20,000 tasks through 32 forked workers SIGKILLed every few ms",
          "[process][chaos]") {
    chaos(start_mode::fork_server);
}
