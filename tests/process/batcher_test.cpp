// torchpool-serve's batcher over a real pool of fake workers ("echo" returns its tensors, so a
// batch keeps its rows): how batches form while every worker is busy.
#include "batcher.hpp"

#include "../support/process_support.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <functional>
#include <optional>

using namespace torchpool;
using namespace torchpool::test;
using namespace std::chrono_literals;

namespace {

// One request of one row.
std::vector<tensor> one_row(float value) {
    return {tensor(dtype::float32, {1, 2},
                   std::string(reinterpret_cast<const char*>(&value), sizeof value) +
                       std::string(reinterpret_cast<const char*>(&value), sizeof value))};
}

// Runs the io_context's handlers until `done()`, for at most ten seconds.
asio::awaitable<bool> until(std::function<bool()> done) {
    asio::steady_timer tick(co_await asio::this_coro::executor);
    for (int i = 0; i < 10'000 && !done(); ++i) {
        tick.expires_after(1ms);
        co_await tick.async_wait(asio::use_awaitable);
    }
    co_return done();
}

// One fake worker that can be made to hang (fault injection), replaced soon when cancelled.
pool_params hangable_worker() {
    auto params = params_for(1);
    params.faults.enabled = true;
    params.cancel_grace = 50ms;
    return params;
}

serve::batcher::params up_to_8_rows() {
    return {
        .method = "echo", .max_batch = 8, .delay = std::chrono::microseconds(1000), .workers = 1};
}

// Where each request's result lands: keep(i) is request i's handler.
template <std::size_t N>
struct result_slots : std::array<std::optional<serve::batch_result>, N> {
    auto keep(std::size_t i) {
        return [this, i](serve::batch_result r) { (*this)[i] = std::move(r); };
    }
    /// Every request has its result.
    bool all() const {
        return std::all_of(this->begin(), this->end(), [](auto& r) { return r.has_value(); });
    }
};

// The only worker hangs in request 0 (alone: the worker was free) until `cancel` is emitted.
template <class Handler>
void hang_the_worker(serve::batcher& batches, asio::cancellation_signal& cancel, Handler h) {
    batches.async_infer(one_row(0), fault::hang(),
                        asio::bind_cancellation_slot(cancel.slot(), std::move(h)));
}

}  // namespace

TEST_CASE("while every worker is busy, one batch waits behind it and the rest keep growing",
          "[serve][batcher]") {
    with_pool(hangable_worker(), [](pool& p) -> asio::awaitable<void> {
        serve::batcher batches(p, up_to_8_rows());
        result_slots<6> results;
        const auto keep = [&](std::size_t i) { return results.keep(i); };
        asio::cancellation_signal cancel_hang;
        hang_the_worker(batches, cancel_hang, keep(0));
        // Requests 1 and 2 arrive together: after the delay they go as one batch, to wait
        // behind the busy worker (so that it starts them at once).
        batches.async_infer(one_row(1), {}, keep(1));
        batches.async_infer(one_row(2), {}, keep(2));
        CHECK(batches.waiting() == 2);
        REQUIRE(co_await until([&] { return batches.waiting() == 0; }));
        // Requests 3, 4 and 5 arrive apart, each past the delay: with a batch already waiting
        // behind the worker, none is sent on its own; they wait and grow into one batch.
        asio::steady_timer apart(co_await asio::this_coro::executor);
        for (std::size_t i = 3; i < 6; ++i) {
            batches.async_infer(one_row(static_cast<float>(i)), {}, keep(i));
            apart.expires_after(5ms);  // the arrivals' spacing, the input of this test
            co_await apart.async_wait(asio::use_awaitable);
        }
        CHECK(batches.waiting() == 3);
        // The hung request is cancelled: its worker is replaced, and runs both batches.
        cancel_hang.emit(asio::cancellation_type::terminal);
        REQUIRE(co_await until([&] { return results.all(); }));
        CHECK(results[0]->error == asio::error::operation_aborted);
        for (std::size_t i = 1; i < 6; ++i) {
            INFO("request " << i << ": " << results[i]->why);
            REQUIRE(!results[i]->error);
            CHECK(results[i]->batch_rows == (i < 3 ? 2u : 3u));
            REQUIRE(results[i]->outputs.size() == 1);
            float value = 0;
            std::memcpy(&value, results[i]->outputs[0].data.data(), sizeof value);
            CHECK(value == static_cast<float>(i));  // its own row back
        }
    });
}

TEST_CASE("requests of 0 rows behind a busy worker each run alone and get the model's answer",
          "[serve][batcher]") {
    // Two of them stacked into a batch of 0 rows once crashed the server (SIGFPE in split).
    with_pool(hangable_worker(), [](pool& p) -> asio::awaitable<void> {
        serve::batcher batches(p, up_to_8_rows());
        result_slots<5> results;
        const auto keep = [&](std::size_t i) { return results.keep(i); };
        const auto no_rows = [] { return std::vector<tensor>{tensor(dtype::float32, {0, 2})}; };
        asio::cancellation_signal cancel_hang;
        hang_the_worker(batches, cancel_hang, keep(0));
        batches.async_infer(no_rows(), {}, keep(1));
        batches.async_infer(no_rows(), {}, keep(2));
        batches.async_infer(one_row(3), {}, keep(3));
        batches.async_infer(one_row(4), {}, keep(4));
        // The two empty requests went to the pool on their own; the others wait to be stacked.
        CHECK(batches.waiting() == 2);
        cancel_hang.emit(asio::cancellation_type::terminal);
        REQUIRE(co_await until([&] { return results.all(); }));
        CHECK(results[0]->error == asio::error::operation_aborted);
        for (std::size_t i = 1; i < 3; ++i) {
            INFO("request " << i << ": " << results[i]->why);
            REQUIRE(!results[i]->error);
            CHECK(results[i]->batch_rows == 0u);
            REQUIRE(results[i]->outputs.size() == 1);
            CHECK(results[i]->outputs[0].shape == std::vector<std::int64_t>{0, 2});
        }
        for (std::size_t i = 3; i < 5; ++i) {
            INFO("request " << i << ": " << results[i]->why);
            REQUIRE(!results[i]->error);
            CHECK(results[i]->batch_rows == 2u);
        }
    });
}

TEST_CASE("requests asking for different faults never share a batch: each gets its own",
          "[serve][batcher]") {
    // A delay and a crash once shared a batch, which took the first fault: the request that
    // asked for a crash was answered as if it had not.
    with_pool(hangable_worker(), [](pool& p) -> asio::awaitable<void> {
        serve::batcher batches(p, up_to_8_rows());
        result_slots<5> results;
        const auto keep = [&](std::size_t i) { return results.keep(i); };
        asio::cancellation_signal cancel_hang;
        hang_the_worker(batches, cancel_hang, keep(0));
        batches.async_infer(one_row(1), fault::delay(1ms), keep(1));
        batches.async_infer(one_row(2), fault::crash(), keep(2));
        batches.async_infer(one_row(3), {}, keep(3));
        batches.async_infer(one_row(4), fault::delay(1ms), keep(4));
        CHECK(batches.waiting() == 4);
        cancel_hang.emit(asio::cancellation_type::terminal);
        REQUIRE(co_await until([&] { return results.all(); }));
        // The delays shared a batch with the request that asked for none; the crash ran apart
        // (a batch of its own, then alone once its worker died) and failed.
        for (std::size_t i : {1, 3, 4}) {
            INFO("request " << i << ": " << results[i]->why);
            CHECK(!results[i]->error);
            CHECK(results[i]->batch_rows == 3u);
        }
        CHECK(results[2]->error == errc::worker_died);
    });
}
