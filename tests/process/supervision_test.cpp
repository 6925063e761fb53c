// The failure model, part 1, provoked for real: hangs (deadlines and heartbeats, with what
// the kernel says the worker was doing), memory limits, recycling, elastic size, restart
// intensity and degraded mode.
#include "../support/process_support.hpp"
#include <torchpool/error.hpp>
#include <torchpool/pool.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

using namespace torchpool;
using namespace torchpool::test;

TEST_CASE("a worker stuck in a system call past its deadline: the error says which, and where",
          "[process][hang]") {
    with_pool(params_for(1), [](pool& p) -> asio::awaitable<void> {
        auto [ec, r] =
            co_await p.async_submit(make_request("block_in_read", "", 300ms), tuple_awaitable);
        CHECK(ec == errc::timeout);
        REQUIRE(r.diagnostics.activity);
        const auto& a = *r.diagnostics.activity;
        CHECK(a.state == 'S');
        CHECK(a.syscall == "read");
        CHECK_THAT(a.wchan, Catch::Contains("pipe"));  // pipe_read (pipe_wait before 5.6)
        CHECK_THAT(r.diagnostics.summary,
                   Catch::Contains("sleeping in " + a.wchan) &&
                       Catch::Contains("blocked in the system call read"));
        if (!a.kernel_stack.empty()) {  // root with CAP_SYS_ADMIN only
            CHECK_THAT(a.kernel_stack, Catch::Contains("pipe"));
        }
    });
}

TEST_CASE("an idle worker that stops answering heartbeats is replaced before it gets a task",
          "[process][hang]") {
    auto params = params_for(1);
    params.heartbeat_interval = 100ms;
    params.heartbeat_timeout = 300ms;
    params.stop_grace = 200ms;
    std::vector<worker_event> unresponsive;
    std::unique_ptr<notifier> changed;
    params.on_worker_event = [&](const worker_event& e) {
        if (e.what == worker_event::kind::unresponsive) {
            unresponsive.push_back(e);
        }
        if (changed) {
            changed->notify();
        }
    };
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        changed = std::make_unique<notifier>(io.get_executor());
        pool p(io.get_executor(), params);
        p.async_run([](boost::system::error_code) {});
        auto [ec, r] = co_await p.async_submit(make_request("pid"), tuple_awaitable);
        REQUIRE(!ec);
        const int frozen = std::stoi(r.payload);

        // Frozen while idle, as a process stopped by a debugger or stuck in the kernel.
        ::kill(frozen, SIGSTOP);
        co_await changed->until([&] { return !unresponsive.empty(); }, 10s);
        CHECK(unresponsive[0].pid == frozen);
        CHECK_THAT(unresponsive[0].description,
                   Catch::Contains("did not answer a heartbeat within 300 ms") &&
                       Catch::Contains("stopped (by SIGSTOP or a debugger)"));

        // Its replacement answers; the frozen one never got a task.
        auto [ec2, r2] = co_await p.async_submit(make_request("pid"), tuple_awaitable);
        CHECK(!ec2);
        CHECK(std::stoi(r2.payload) != frozen);
        const auto s = p.stats();
        CHECK(s.unresponsive == 1);
        CHECK(s.worker_died == 0);
        co_await p.async_shutdown(tuple_awaitable);
        changed.reset();
    });
    CHECK(child_pids().empty());
}
