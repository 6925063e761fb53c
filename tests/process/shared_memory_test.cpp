// The data plane with real workers: tensors through shared memory both ways, in both start
// modes, and each safety rule provoked for real by a worker that breaks it.
#include "../support/process_support.hpp"
#include <torchpool/error.hpp>
#include <torchpool/pool.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/system/system_error.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>

#include <signal.h>

using namespace torchpool;
using namespace torchpool::test;

namespace {

// A uint8 tensor of `n` bytes counting up from `seed`.
tensor counting(std::size_t n, int seed) {
    std::string bytes(n, '\0');
    for (std::size_t i = 0; i < n; ++i) {
        bytes[i] = static_cast<char>((i + static_cast<std::size_t>(seed)) & 0xff);
    }
    return tensor(dtype::uint8, {static_cast<std::int64_t>(n)}, std::move(bytes));
}

pool_params with_start(pool_params params, start_mode mode) {
    params.worker.start = mode;
    return params;
}

}  // namespace

TEST_CASE(
    "large tensors go through shared memory both ways, spawned or forked, and small ones "
    "inline",
    "[process][shm]") {
    for (const auto mode : {start_mode::direct, start_mode::fork_server}) {
        INFO((mode == start_mode::direct ? "spawned workers" : "forked workers"));
        with_pool(with_start(params_for(2), mode), [](pool& p) -> asio::awaitable<void> {
            const tensor big = counting(3 << 20, 7);
            const tensor small = counting(100, 1);
            std::vector<tensor> both{big, small};
            auto [ec, r] =
                co_await p.async_submit(request("echo", "x", std::move(both)), tuple_awaitable);
            INFO(r.diagnostics.summary);
            REQUIRE(!ec);
            REQUIRE(r.tensors.size() == 2);
            CHECK(r.tensors[0].shared);  // a view of the worker's output memory
            CHECK_FALSE(r.tensors[0].shared.writable());
            CHECK(r.tensors[0].data.empty());
            CHECK(r.tensors[0].chars() == big.chars());
            CHECK_FALSE(r.tensors[1].shared);  // small: inline
            CHECK(r.tensors[1].data == small.data);
            auto s = p.stats();
            CHECK(s.tensors_shared == 1);
            CHECK(s.tensors_inline == 1);
            CHECK(s.input_memory_used == 0);  // the request's copy is gone with the task
            CHECK(s.output_memory_held == (3u << 20));
            CHECK(p.health().output_memory_held == (3u << 20));
            r = {};
            CHECK(p.stats().output_memory_held == 0);

            // A tensor the caller allocated in the pool's memory and filled in place.
            tensor mine = p.allocate(dtype::uint8, {1 << 20});
            CHECK(mine.shared.writable());
            auto bytes = mine.writable_bytes();
            std::memset(bytes.data(), 3, bytes.size());
            CHECK(p.stats().input_memory_used == (1u << 20));
            CHECK(p.health().input_memory_used == (1u << 20));  // from any thread
            CHECK(p.health().input_memory_bytes == (1u << 30));
            std::vector<tensor> inputs{mine};
            auto [ec2, r2] =
                co_await p.async_submit(request("sum", {}, std::move(inputs)), tuple_awaitable);
            REQUIRE(!ec2);
            CHECK(r2.payload == std::to_string(3u << 20));
            CHECK(p.stats().input_memory_used == (1u << 20));  // still the caller's
            mine = {};
            CHECK(p.stats().input_memory_used == 0);
        });
    }
}

TEST_CASE("allocate refuses what cannot fit and says when the memory is full", "[process][shm]") {
    auto params = params_for(1);
    params.shared_memory.input_bytes = 1 << 20;
    with_pool(params, [](pool& p) -> asio::awaitable<void> {
        boost::system::error_code ec;
        CHECK_FALSE(p.allocate(dtype::float32, {-1}, ec).shared);
        CHECK(ec == errc::invalid_request);
        CHECK_FALSE(p.allocate(dtype::uint8, {(1 << 20) + 1}, ec).shared);
        CHECK(ec == errc::invalid_request);
        tensor most = p.allocate(dtype::uint8, {900 * 1024}, ec);
        CHECK(!ec);
        CHECK_FALSE(p.allocate(dtype::uint8, {200 * 1024}, ec).shared);
        CHECK(ec == errc::shared_memory_full);
        CHECK_THROWS_AS(p.allocate(dtype::uint8, {200 * 1024}), boost::system::system_error);
        // A large tensor of the caller's own that finds the memory full goes inline.
        std::vector<tensor> inputs{counting(200 * 1024, 0)};
        auto [ec2, r] =
            co_await p.async_submit(request("sum", {}, std::move(inputs)), tuple_awaitable);
        CHECK(!ec2);
        CHECK(p.stats().input_memory_full == 1);
        most = {};
        CHECK(p.allocate(dtype::uint8, {200 * 1024}, ec).shared);
        co_return;
    });
}

TEST_CASE("a retried task reuses its input in shared memory", "[process][shm]") {
    auto params = params_for(2);
    // The first run of each task crashes its worker; the retry runs on another.
    params.faults = {.enabled = true, .choose = [](const fault_target& t) {
                         return t.attempt == 1 ? fault::crash(SIGKILL) : fault();
                     }};
    with_pool(params, [](pool& p) -> asio::awaitable<void> {
        const tensor input = counting(1 << 20, 5);
        std::uint64_t expected = 0;
        for (const auto c : input.data) {
            expected += static_cast<std::uint8_t>(c);
        }
        std::vector<tensor> inputs{input};
        auto [ec, r] = co_await p.async_submit(
            request("sum", {}, std::move(inputs)).with_retries(2), tuple_awaitable);
        INFO(r.diagnostics.summary);
        REQUIRE(!ec);
        CHECK(r.attempts.size() == 2);  // the second run read the same bytes
        CHECK(r.payload == std::to_string(expected));
        CHECK(p.stats().tensors_shared == 1);  // copied into shared memory once
        CHECK(p.stats().input_memory_used == 0);
    });
}

TEST_CASE("a worker whose output memory is not sealed is refused at its hello", "[process][shm]") {
    auto params = params_for(1, {"--unsealed-outputs"});
    params.restart_backoff = {.initial = std::chrono::milliseconds(1),
                              .max = std::chrono::milliseconds(5)};
    with_pool(params, [](pool& p) -> asio::awaitable<void> {
        auto [ec, r] = co_await p.async_submit(
            make_request("echo").with_timeout(std::chrono::milliseconds(2000)), tuple_awaitable);
        CHECK(ec);
        CHECK_THAT(p.stats().last_start_error, Catch::Contains("size is not sealed"));
    });
}

TEST_CASE("a worker cannot truncate the pool's input memory", "[process][shm]") {
    std::vector<std::string> lines;
    auto params = params_for(1, {"--truncate-inputs"});
    params.on_log_line = [&](const log_line& l) { lines.emplace_back(l.text); };
    params.shared_memory.input_bytes = 1 << 22;
    with_pool(params, [&](pool& p) -> asio::awaitable<void> {
        std::vector<tensor> inputs{counting(1 << 20, 0)};
        auto [ec, r] =
            co_await p.async_submit(request("sum", {}, std::move(inputs)), tuple_awaitable);
        CHECK(!ec);
        REQUIRE_FALSE(lines.empty());
        CHECK_THAT(lines[0], Catch::Contains("truncating the input memory was refused"));
    });
}

TEST_CASE("a worker that writes into its inputs dies of it, and only its task fails",
          "[process][shm]") {
    with_pool(params_for(2), [](pool& p) -> asio::awaitable<void> {
        std::vector<tensor> inputs{counting(1 << 20, 9)};
        auto [ec, r] =
            co_await p.async_submit(request("write_input", {}, std::move(inputs)), tuple_awaitable);
        CHECK(ec == errc::worker_died);
        CHECK(r.diagnostics.signal == SIGSEGV);
        std::vector<tensor> more{counting(1 << 20, 9)};
        auto [ec2, r2] =
            co_await p.async_submit(request("echo", {}, std::move(more)), tuple_awaitable);
        CHECK(!ec2);
        CHECK(r2.tensors.at(0).chars() == counting(1 << 20, 9).data);
    });
}

TEST_CASE("a reply that places a tensor wrongly is a protocol error of that worker",
          "[process][shm]") {
    for (const std::string kind : {"outside", "length", "overlap"}) {
        INFO(kind);
        with_pool(params_for(1), [&](pool& p) -> asio::awaitable<void> {
            // A result the caller holds: the first block of the worker's output memory.
            auto [ec0, held] =
                co_await p.async_submit(make_request("fill", "100000 7"), tuple_awaitable);
            REQUIRE(!ec0);
            REQUIRE(held.tensors.at(0).shared);
            auto [ec, r] =
                co_await p.async_submit(make_request("bad_reference", kind), tuple_awaitable);
            CHECK(ec == errc::protocol_error);
            CHECK_THAT(r.diagnostics.summary, Catch::Contains("tensor 0"));
            // The held result is untouched, and the pool goes on with a new worker.
            const auto bytes = held.tensors[0].bytes();
            CHECK(std::all_of(bytes.begin(), bytes.end(),
                              [](std::byte b) { return b == std::byte{7}; }));
            auto [ec2, r2] =
                co_await p.async_submit(make_request("fill", "70000 1"), tuple_awaitable);
            CHECK(!ec2);
        });
    }
}

TEST_CASE("a result stays valid after the worker that wrote it is killed", "[process][shm]") {
    event_log events;
    auto params = params_for(1);
    params.on_worker_event = events.observer();
    with_pool(params, events, [&](pool& p) -> asio::awaitable<void> {
        auto [ec, kept] =
            co_await p.async_submit(make_request("fill", "2000000 42"), tuple_awaitable);
        REQUIRE(!ec);
        REQUIRE(kept.tensors.at(0).shared);
        const auto exits = events.of(worker_event::kind::exited).size();
        ::kill(kept.worker_pid, SIGKILL);
        co_await events.changed->until(
            [&] { return events.of(worker_event::kind::exited).size() > exits; });
        const auto bytes = kept.tensors[0].bytes();
        CHECK(bytes.size() == 2000000);
        CHECK(std::all_of(bytes.begin(), bytes.end(),
                          [](std::byte b) { return b == std::byte{42}; }));
        // Its replacement has memory of its own; the old one is kept while the caller holds it.
        auto [ec2, r2] =
            co_await p.async_submit(make_request("fill", "2000000 1"), tuple_awaitable);
        REQUIRE(!ec2);
        CHECK(r2.worker_pid != kept.worker_pid);
        CHECK(std::all_of(bytes.begin(), bytes.end(),
                          [](std::byte b) { return b == std::byte{42}; }));
        kept = {};
        r2 = {};
        CHECK(p.stats().output_memory_held == 0);
    });
}

TEST_CASE("async_allocate waits for room, in order, and its wait can be cancelled",
          "[process][shm]") {
    auto params = params_for(1);
    params.shared_memory.input_bytes = 1 << 20;
    with_pool(params, [](pool& p) -> asio::awaitable<void> {
        auto ex = co_await asio::this_coro::executor;
        // Room at once: completes as allocate does (never inline).
        // The shapes are built first: GCC 12 rejects a braced list inside co_await.
        const std::vector<std::int64_t> most{600 * 1024}, too_big{2 << 20};
        auto [ec0, first] = co_await p.async_allocate(dtype::uint8, most, tuple_awaitable);
        REQUIRE(!ec0);
        REQUIRE(first.shared);
        // A tensor that can never fit is refused at once.
        auto [ec1, none] = co_await p.async_allocate(dtype::uint8, too_big, tuple_awaitable);
        CHECK(ec1 == errc::invalid_request);

        // Full: two waits, the first of them cancelled; the second gets the room once the
        // first tensor is let go. (This coroutine runs on the pool's io_context, so each call
        // has queued its wait when it returns.)
        notifier woken(ex);
        bool second_done = false;
        tensor second;
        asio::cancellation_signal cancel_first;
        boost::system::error_code first_wait_ec;
        bool first_wait_done = false;
        p.async_allocate(dtype::uint8, {600 * 1024},
                         asio::bind_cancellation_slot(cancel_first.slot(),
                                                      [&](boost::system::error_code ec, tensor) {
                                                          first_wait_ec = ec;
                                                          first_wait_done = true;
                                                          woken.notify();
                                                      }));
        p.async_allocate(dtype::uint8, {600 * 1024}, [&](boost::system::error_code ec, tensor t) {
            CHECK(!ec);
            second = std::move(t);
            second_done = true;
            woken.notify();
        });
        CHECK_FALSE(first_wait_done);
        CHECK_FALSE(second_done);
        cancel_first.emit(asio::cancellation_type::terminal);
        co_await woken.until([&] { return first_wait_done; });
        CHECK(first_wait_ec == asio::error::operation_aborted);
        CHECK_FALSE(second_done);
        first = {};  // let go: the waiting allocation gets the room
        co_await woken.until([&] { return second_done; });
        CHECK(second.bytes().size() == 600 * 1024);
        CHECK(p.stats().input_memory_used == 600 * 1024);
    });
}

TEST_CASE("a wait for room ends with shutting_down when the pool stops", "[process][shm]") {
    run_coroutine([](asio::io_context& io) -> asio::awaitable<void> {
        auto params = params_for(1);
        params.shared_memory.input_bytes = 1 << 20;
        pool p(io.get_executor(), std::move(params));
        p.async_run(asio::detached);
        tensor all = p.allocate(dtype::uint8, {1 << 20});
        boost::system::error_code waited;
        bool done = false;
        p.async_allocate(dtype::uint8, {1024}, [&](boost::system::error_code ec, tensor) {
            waited = ec;
            done = true;
        });
        auto [ec] = co_await p.async_shutdown(tuple_awaitable);
        CHECK(!ec);
        notifier woken(io.get_executor());
        co_await woken.until([&] { return done; });
        CHECK(waited == errc::shutting_down);
    });
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
// (A sanitizer's shadow of the 64 MiB the worker writes is memory of the worker's own, tens
// of MiB under TSan: the figures below assume a worker that has none.)
TEST_CASE("results held in a worker's output memory are not its own memory for its limits",
          "[process][shm][memory]") {
    constexpr std::uint64_t mib = 1 << 20;
    event_log events;
    auto params = params_for(1);
    params.on_worker_event = events.observer();
    params.shared_memory.worker_output_bytes = 96 * mib;
    // A cgroup, where the host allows one, gets the hard limit plus the output memory: the
    // kernel charges the result's pages to the worker that wrote them.
    params.memory = {
        .soft_limit_bytes = 40 * mib, .hard_limit_bytes = 56 * mib, .sample_interval = 20ms};
    with_pool(params, events, [&](pool& p) -> asio::awaitable<void> {
        // 64 MiB written in output memory, not yet read by the host: the kernel's cheap
        // figure counts them as the worker's private pages.
        auto [ec, held] =
            co_await p.async_submit(make_request("fill", "67108864 9"), tuple_awaitable);
        INFO(held.diagnostics.summary);
        REQUIRE(!ec);
        REQUIRE(held.tensors.at(0).shared);
        // It was read when its task ended (before the caller heard): neither killed nor
        // recycled, so the next task runs in the same process.
        auto [ec2, r2] = co_await p.async_submit(make_request("pid"), tuple_awaitable);
        REQUIRE(!ec2);
        CHECK(std::stoi(r2.payload) == held.worker_pid);
        CHECK(events.of(worker_event::kind::recycled).empty());
        CHECK(events.of(worker_event::kind::memory_limit).empty());

        // Stopped by a deadline, its figures tell the two apart.
        auto [ec3, r3] = co_await p.async_submit(
            make_request("hang").with_timeout(std::chrono::milliseconds(300)), tuple_awaitable);
        CHECK(ec3 == errc::timeout);
        REQUIRE(r3.diagnostics.memory);
        const auto& m = *r3.diagnostics.memory;
        REQUIRE(m.shared_memory_bytes);
        CHECK(*m.shared_memory_bytes >= 64 * mib);
        CHECK(m.private_bytes < 40 * mib);
        CHECK_THAT(r3.diagnostics.summary, Catch::Contains("MiB of tensors in shared memory"));
        const auto bytes = held.tensors[0].bytes();
        CHECK(
            std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{9}; }));

        // Memory of its own still counts: 48 MiB of heap is over the soft limit.
        auto [ec4, r4] = co_await p.async_submit(make_request("allocate", "48"), tuple_awaitable);
        CHECK(!ec4);
        const auto leaker = r4.worker_pid;
        co_await events.changed->until([&] {
            const auto recycled = events.of(worker_event::kind::recycled);
            return !recycled.empty() && recycled[0].pid == leaker;
        });
    });
}
#endif
