// One thread supervising hundreds of real worker processes.
#include "../support/process_support.hpp"
#include <torchpool/pool.hpp>

#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>

#include <catch2/catch.hpp>

#include <functional>
#include <set>

using namespace torchpool;
using namespace torchpool::test;

TEST_CASE("one thread supervises 256 workers through 10,000 tasks, then leaves nothing behind",
          "[process][scale]") {
    asio::io_context io{1};
    // The reactor (epoll, eventfd, timerfd) is created with the first I/O object; make it
    // exist before counting, so that only the pool's descriptors are compared.
    asio::steady_timer reactor_exists(io);
    const std::size_t fds_before = open_fd_count();
    {
        // Tasks are submitted once all 256 are up (starts are staged, so tasks submitted at
        // once would be done before the last workers started).
        std::function<void()> submit_all;
        int ready = 0;
        pool p(io.get_executor(), {.worker = fake_worker(),
                                   .workers = 256,
                                   .queue_limit = 20'000,
                                   .on_worker_event = [&](const worker_event& e) {
                                       if (e.what == worker_event::kind::ready && ++ready == 256) {
                                           asio::post(io, submit_all);
                                       }
                                   }});
        bool run_done = false;
        p.async_run([&](boost::system::error_code ec) {
            CHECK(!ec);
            run_done = true;
        });
        constexpr int tasks = 10'000;
        int ok = 0, failed = 0;
        std::set<int> pids;
        submit_all = [&] {
            for (int i = 0; i < tasks; ++i) {
                p.async_submit(make_request("echo", std::to_string(i)),
                               [&, i](boost::system::error_code ec, response r) {
                                   if (!ec && r.payload == std::to_string(i)) {
                                       ++ok;
                                       pids.insert(r.worker_pid);
                                   } else {
                                       ++failed;
                                   }
                                   if (ok + failed == tasks) {
                                       p.async_shutdown(asio::detached);
                                   }
                               });
            }
        };
        io.run_for(180s);
        CHECK(ok == tasks);
        CHECK(failed == 0);
        CHECK(run_done);
        CHECK(pids.size() > 128);  // the work really was spread over the workers
        auto s = p.stats();
        CHECK(s.spawned == 256);
        CHECK(s.workers_stopped == 256);
        CHECK(s.failed_starts == 0);
    }
    CHECK(child_pids().empty());
    CHECK(open_fd_count() == fds_before);
}
