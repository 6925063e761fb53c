// Chaos: tens of thousands of tasks through 32 workers while a thread of the host SIGKILLs a
// random worker every few milliseconds. The pool must neither lie nor lose anything: every
// task completes exactly once; an idempotent one (half of them, request::with_retries(10)) with
// its result, since it is run again when its worker is killed under it; any other with its
// result or with worker_died. No task is failed for want of workers (the machine can start
// them the whole time), none outlives its deadline; afterwards the pool is at full strength,
// with no zombie and no leaked descriptor.
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
    constexpr int tasks = 20'000;
    constexpr std::size_t workers = 32;
    constexpr auto deadline = 30s;
    asio::io_context io{1};
    asio::steady_timer reactor_exists(io);
    const std::size_t fds_before = open_fd_count();
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    // A sanitized worker takes ten times as long to start: the same pressure, relative to
    // what the machine can restart, is a kill every 10 to 25 ms.
    outside_killer killer(10ms, 25ms);
#else
    outside_killer killer(2000us, 5000us);
#endif
    std::vector<worker_event> events;
    std::size_t ready = 0;
    {
        notifier changed(io.get_executor());
        auto params = pool_params{.worker = fake_worker(),
                                  .workers = workers,
                                  .queue_limit = tasks,
                                  .task_timeout = deadline,
                                  // The killer is random: a task killed under several times
                                  // is unlucky, not poison. On a loaded machine the pool
                                  // slows down while the killer does not, and a task may be
                                  // hit four times in 20,000, so poison detection is off.
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

        std::vector<int> completions(tasks, 0);
        std::map<std::string, int> outcomes;
        int idempotent_failed = 0;
        int retried = 0;  // idempotent tasks that ran more than once and succeeded
        int done = 0;
        int late = 0;
        const auto submitted = std::chrono::steady_clock::now();
        run_coroutine_on(io, [&]() -> asio::awaitable<void> {
            // A service that is up, then is hit: every worker ready before the killing starts
            // (workers killed before any ever started would rightly make the pool degraded).
            co_await changed.until([&] { return ready >= workers; }, 60s);
            for (int i = 0; i < tasks; ++i) {
                const bool idempotent = i % 2 == 1;
                auto req = make_request("echo", std::to_string(i));
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
                                   if (std::chrono::steady_clock::now() - submitted > deadline) {
                                       ++late;
                                   }
                                   ++done;
                                   changed.notify();
                               });
            }
            killer.start();
            co_await changed.until([&] { return done == tasks; }, 240s);
            killer.stop();
            // Back to full strength once the killing stops and every kill has been seen.
            co_await changed.until(
                [&] { return killer.all_exits_seen() && p.stats().workers_idle == workers; }, 30s);
        });

        const auto s = p.stats();
        INFO("outcomes: " << [&] {
            std::string text;
            for (const auto& [what, n] : outcomes) {
                text += what + " x" + std::to_string(n) + "; ";
            }
            return text;
        }());
        INFO("kills " << killer.kills() << ", retried runs " << s.retried << ", restarts "
                      << s.restarts << ", paced " << s.paced_restarts << ", failed starts "
                      << s.failed_starts);
        CHECK(std::all_of(completions.begin(), completions.end(), [](int n) { return n == 1; }));
        CHECK(outcomes["ok"] + outcomes[make_error_code(errc::worker_died).message()] == tasks);
        CHECK(outcomes["ok"] > tasks / 2);
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
