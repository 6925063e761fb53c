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
