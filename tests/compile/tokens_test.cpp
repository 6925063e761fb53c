// Every completion token a host application may use with every operation, compiled and run
// for real against a pool of fake workers.
#include "../support/process_support.hpp"
#include <torchpool/pool.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_future.hpp>

#include <catch2/catch.hpp>

#include <future>
#include <thread>

using namespace torchpool;
using namespace torchpool::test;

namespace {

pool_params two_fake_workers() {
    return {.worker = fake_worker(), .workers = 2};
}

}  // namespace

TEST_CASE("async_submit works with a plain callback", "[tokens]") {
    asio::io_context io{1};
    pool p(io.get_executor(), two_fake_workers());
    p.async_run(asio::detached);
    std::string got;
    p.async_submit(make_request("echo", "callback"), [&](boost::system::error_code ec, response r) {
        CHECK(!ec);
        got = r.payload;
        p.async_shutdown([](boost::system::error_code) {});
    });
    io.run_for(30s);
    CHECK(got == "callback");
}

TEST_CASE("async_submit works with use_awaitable, as_tuple and awaitable operators", "[tokens]") {
    run_coroutine([](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), two_fake_workers());
        p.async_run(asio::detached);
        // use_awaitable: errors are thrown as system_error.
        response r =
            co_await p.async_submit(make_request("echo", "awaitable"), asio::use_awaitable);
        CHECK(r.payload == "awaitable");
        CHECK_THROWS_AS(co_await p.async_submit(make_request("throw", "x"), asio::use_awaitable),
                        boost::system::system_error);
        // as_tuple(use_awaitable): errors as values.
        auto [ec, r2] = co_await p.async_submit(make_request("echo", "tuple"),
                                                asio::as_tuple(asio::use_awaitable));
        CHECK(!ec);
        CHECK(r2.payload == "tuple");
        // Racing a timer: the task is cancelled (terminal) when the timer wins.
        using namespace boost::asio::experimental::awaitable_operators;
        asio::steady_timer timer(io, 200ms);
        auto winner = co_await (p.async_submit(make_request("hang"), asio::use_awaitable) ||
                                timer.async_wait(asio::use_awaitable));
        CHECK(winner.index() == 1);
        CHECK(p.stats().cancelled == 1);
        co_await p.async_shutdown(asio::use_awaitable);
    });
}

// GCC 12 frees the members of a braced aggregate temporary inside a co_await expression
// twice; request and tensor have constructors so that building them inline is safe. Each
// shape below is one a user writes; under AddressSanitizer an aggregate would abort here.
static_assert(!std::is_aggregate_v<request> && !std::is_aggregate_v<tensor>,
              "request and tensor must stay non-aggregates (GCC 12 co_await bug)");

TEST_CASE("requests and tensors built inside co_await expressions survive GCC 12",
          "[tokens][gcc12]") {
    run_coroutine([](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), two_fake_workers());
        p.async_run(asio::detached);
        const std::string bytes(100, 'b');  // longer than the small-string buffer
        auto [ec1, r1] = co_await p.async_submit(torchpool::request("echo", bytes),
                                                 asio::as_tuple(asio::use_awaitable));
        CHECK(r1.payload == bytes);
        response r2 = co_await p.async_submit({"echo", bytes}, asio::use_awaitable);
        CHECK(r2.payload == bytes);
        // (A braced list such as a shape {4, 8} inside co_await does not even compile with
        // GCC 12, "array used as initializer", so the shape is built first.)
        const std::vector<std::int64_t> shape{4, 8};
        response r3 = co_await p.async_submit(
            torchpool::request(
                "echo", bytes,
                std::vector<tensor>(2, tensor(dtype::float32, shape, std::string(128, 'f')))),
            asio::use_awaitable);
        REQUIRE(r3.tensors.size() == 2);
        CHECK(r3.tensors[1].data == std::string(128, 'f'));
        auto [ec4, r4] = co_await p.async_submit(
            torchpool::request("echo", bytes).with_timeout(std::chrono::milliseconds(5'000)),
            asio::as_tuple(asio::use_awaitable));
        CHECK(r4.payload == bytes);
        CHECK(!ec1);
        CHECK(!ec4);
        co_await p.async_shutdown(asio::use_awaitable);
    });
}

TEST_CASE("async_submit works with deferred", "[tokens]") {
    run_coroutine([](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), two_fake_workers());
        auto run = p.async_run(asio::deferred);
        std::move(run)(asio::detached);
        auto op = p.async_submit(make_request("echo", "deferred"), asio::deferred);
        auto [ec, r] = co_await std::move(op)(asio::as_tuple(asio::use_awaitable));
        CHECK(!ec);
        CHECK(r.payload == "deferred");
        co_await p.async_shutdown(asio::deferred)(asio::use_awaitable);
    });
}

TEST_CASE("async_submit works with use_future from another thread", "[tokens]") {
    asio::io_context io{1};
    pool p(io.get_executor(), two_fake_workers());
    p.async_run(asio::detached);
    std::thread runner([&] { io.run_for(30s); });
    std::future<response> ok = p.async_submit(make_request("echo", "future"), asio::use_future);
    std::future<response> bad = p.async_submit(make_request("throw", "no"), asio::use_future);
    CHECK(ok.get().payload == "future");
    CHECK_THROWS_AS(bad.get(), boost::system::system_error);
    std::future<void> done = p.async_shutdown(asio::use_future);
    done.get();
    runner.join();
}

TEST_CASE("async_submit works with detached", "[tokens]") {
    asio::io_context io{1};
    pool p(io.get_executor(), two_fake_workers());
    p.async_run(asio::detached);
    p.async_submit(make_request("echo", "fire and forget"), asio::detached);
    p.async_submit(make_request("pid"), [&](boost::system::error_code ec, response) {
        CHECK(!ec);
        p.async_shutdown(asio::detached);
    });
    io.run_for(30s);
    CHECK(p.stats().succeeded == 2);
}

TEST_CASE("the pool runs on a strand of a 4-thread io_context, fed from many threads",
          "[tokens][threads]") {
    asio::io_context io{4};
    auto strand = asio::make_strand(io);
    pool p(strand, {.worker = fake_worker(), .workers = 4, .queue_limit = 10'000});
    std::promise<void> run_done;
    p.async_run([&](boost::system::error_code ec) {
        CHECK(!ec);
        run_done.set_value();
    });
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
        threads.emplace_back([&io] { io.run_for(60s); });
    }
    constexpr int per_thread = 250;
    std::vector<std::thread> submitters;
    std::atomic<int> correct{0};
    for (int t = 0; t < 4; ++t) {
        submitters.emplace_back([&, t] {
            std::vector<std::future<response>> results;
            for (int i = 0; i < per_thread; ++i) {
                results.push_back(p.async_submit(
                    make_request("echo", std::to_string(t) + ":" + std::to_string(i)),
                    asio::use_future));
            }
            for (int i = 0; i < per_thread; ++i) {
                if (results[i].get().payload == std::to_string(t) + ":" + std::to_string(i)) {
                    ++correct;
                }
            }
        });
    }
    for (auto& s : submitters) {
        s.join();
    }
    CHECK(correct == 4 * per_thread);
    p.async_shutdown(asio::detached);
    run_done.get_future().wait();
    io.stop();
    for (auto& t : threads) {
        t.join();
    }
    CHECK(child_pids().empty());
}

TEST_CASE("async_next_event works with a callback, use_awaitable, deferred and use_future",
          "[tokens]") {
    // use_future, from a thread that does not run the io_context.
    asio::io_context io{1};
    pool p(io.get_executor(), two_fake_workers());
    p.async_run(asio::detached);
    std::future<worker_event> first = p.async_next_event(asio::use_future);
    std::thread runner([&] { io.run_for(30s); });
    REQUIRE(first.wait_for(30s) == std::future_status::ready);
    const auto started = first.get();
    CHECK(started.pid > 0);

    // A callback, then deferred and use_awaitable from a coroutine on the pool's executor.
    std::promise<worker_event::kind> by_callback;
    p.async_next_event([&](boost::system::error_code ec, worker_event e) {
        CHECK(!ec);
        by_callback.set_value(e.what);
    });
    REQUIRE(by_callback.get_future().wait_for(30s) == std::future_status::ready);
    std::promise<void> coroutine_done;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto later = p.async_next_event(asio::deferred);
            worker_event e = co_await std::move(later)(asio::use_awaitable);
            CHECK(!e.description.empty());
            co_await p.async_shutdown(asio::use_awaitable);
            // After the end and every event: eof, as an exception with use_awaitable.
            for (;;) {
                auto [ec, rest] = co_await p.async_next_event(asio::as_tuple(asio::use_awaitable));
                if (ec) {
                    CHECK(ec == asio::error::eof);
                    break;
                }
            }
            CHECK_THROWS_AS(co_await p.async_next_event(asio::use_awaitable),
                            boost::system::system_error);
        },
        [&](std::exception_ptr e) {
            CHECK(!e);
            coroutine_done.set_value();
        });
    REQUIRE(coroutine_done.get_future().wait_for(30s) == std::future_status::ready);
    runner.join();
}

TEST_CASE("async_allocate works with a callback, use_awaitable, deferred and use_future",
          "[tokens]") {
    asio::io_context io{1};
    pool p(io.get_executor(), two_fake_workers());
    const std::vector<std::int64_t> shape{1024};
    std::future<tensor> by_future = p.async_allocate(dtype::float32, shape, asio::use_future);
    bool called = false;
    p.async_allocate(dtype::uint8, shape, [&](boost::system::error_code ec, tensor t) {
        CHECK(!ec);
        CHECK(t.bytes().size() == 1024);
        called = true;
    });
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            tensor a = co_await p.async_allocate(dtype::int64, shape, asio::use_awaitable);
            CHECK(a.bytes().size() == 8 * 1024);
            auto later = p.async_allocate(dtype::int8, shape, asio::deferred);
            auto [ec, b] = co_await std::move(later)(asio::as_tuple(asio::use_awaitable));
            CHECK(!ec);
            CHECK(b.shared.writable());
        },
        asio::detached);
    io.run_for(10s);
    CHECK(called);
    REQUIRE(by_future.wait_for(0s) == std::future_status::ready);
    CHECK(by_future.get().bytes().size() == 4 * 1024);
}
