// The batching policy on a simulated clock: when what waits is sent.
#include "batch_policy.hpp"

#include <catch2/catch.hpp>

#include <deque>
#include <vector>

using namespace torchpool::serve;
using namespace std::chrono_literals;
using clock_type = batch_policy::clock;

namespace {

const clock_type::time_point t0{};

batch_policy make(std::size_t max_batch, std::size_t workers, clock_type::duration delay = 200us) {
    return batch_policy({.max_batch = max_batch, .delay = delay, .workers = workers});
}

// Every worker of `p` busy with a task of its own.
void occupy(batch_policy& p, std::size_t tasks) {
    for (std::size_t i = 0; i < tasks; ++i) {
        p.sent();
    }
}

}  // namespace

TEST_CASE("what is batched: batching on, a stackable request, fewer rows than a batch",
          "[serve][batching]") {
    const auto p = make(8, 2);
    CHECK(p.batches(1, true));
    CHECK(p.batches(7, true));
    CHECK_FALSE(p.batches(8, true));  // a batch on its own
    CHECK_FALSE(p.batches(1, false));
    CHECK_FALSE(make(1, 2).batches(1, true));  // batching off
}

TEST_CASE("a lone request goes at once while a worker is free", "[serve][batching]") {
    auto p = make(8, 2);
    p.arrived(t0, 1);
    CHECK(p.send_on_arrival());
    p.taken(1, 1);
    p.sent();
    CHECK_FALSE(p.send_on_arrival());  // nothing waits
    CHECK_FALSE(p.wake_at(t0));
}

TEST_CASE("while every worker is busy, a request waits for the delay since the oldest",
          "[serve][batching]") {
    auto p = make(8, 2);
    occupy(p, 2);
    p.arrived(t0, 1);
    CHECK_FALSE(p.send_on_arrival());
    p.arrived(t0 + 150us, 1);
    CHECK_FALSE(p.send_on_arrival());
    REQUIRE(p.wake_at(t0));
    CHECK(*p.wake_at(t0) == t0 + 200us);  // counted from the oldest, not the newest
    CHECK_FALSE(p.send_on_timer(t0 + 199us, t0));
    CHECK(p.send_on_timer(t0 + 200us, t0));
}

TEST_CASE("a full batch goes at once, busy workers or not", "[serve][batching]") {
    auto p = make(4, 1);
    occupy(p, 1);
    p.arrived(t0, 3);
    CHECK_FALSE(p.send_on_arrival());
    p.arrived(t0 + 1us, 1);
    CHECK(p.send_on_arrival());
}

TEST_CASE("a freed worker takes what waits", "[serve][batching]") {
    auto p = make(8, 1);
    occupy(p, 1);
    p.arrived(t0, 1);
    CHECK_FALSE(p.send_on_task_done());
    p.task_done();
    CHECK(p.send_on_task_done());
}

TEST_CASE("one batch may wait behind each busy worker, no more", "[serve][batching]") {
    auto p = make(8, 1);
    occupy(p, 2);  // one running, one sent behind it by the delay
    p.arrived(t0, 1);
    CHECK_FALSE(p.wake_at(t0));  // no timer: the next completed task sends it
    CHECK_FALSE(p.send_on_timer(t0 + 1s, t0));
    p.task_done();
    REQUIRE(p.wake_at(t0));
    CHECK(p.send_on_timer(t0 + 200us, t0));
}

TEST_CASE("under a fast steady pace a request is held for the company already in, no longer",
          "[serve][batching]") {
    auto p = make(8, 2, 200us);
    occupy(p, 1);  // one of two workers busy: one is free
    auto at = t0;
    // Arrivals every 10 us while others are in flight: the pace is learnt.
    for (int i = 0; i < 3; ++i) {
        p.arrived(at, 1);
        if (i == 0) {
            CHECK(p.send_on_arrival());  // no pace known yet: the free worker takes it
            p.taken(1, 1);
            p.sent();
            p.task_done();
        }
        at += 10us;
    }
    // Held although a worker is free, but due at once: the timer sends it once the event loop
    // has handed over the requests that arrived with it, never waiting for more.
    CHECK_FALSE(p.send_on_arrival());
    const auto oldest = t0 + 10us;
    REQUIRE(p.wake_at(oldest));
    CHECK(*p.wake_at(oldest) == oldest);
    CHECK(p.send_on_timer(oldest, oldest));
}

TEST_CASE("a slow pace is never held", "[serve][batching]") {
    auto p = make(8, 2, 200us);
    occupy(p, 1);
    p.arrived(t0, 1);
    p.taken(1, 1);
    p.sent();
    p.task_done();
    p.arrived(t0 + 150us, 1);  // a gap over half the delay
    CHECK(p.send_on_arrival());
}

TEST_CASE("a lone client's requests say nothing of the pace", "[serve][batching]") {
    auto p = make(8, 2, 200us);
    // One client, one request at a time, 1 us apart: nothing else is ever in flight.
    for (int i = 0; i < 10; ++i) {
        p.arrived(t0 + i * 1us, 1);
        CHECK(p.send_on_arrival());
        p.taken(1, 1);
        p.sent();
        p.task_done();
    }
}

TEST_CASE("a request that leaves its wait leaves the count", "[serve][batching]") {
    auto p = make(4, 1);
    occupy(p, 1);
    p.arrived(t0, 2);
    p.taken(2, 1);  // its client went away
    CHECK(p.waiting() == 0);
    CHECK_FALSE(p.wake_at(t0));
    p.arrived(t0 + 1us, 3);
    CHECK_FALSE(p.send_on_arrival());  // 3 rows of 4: not full (the 2 gone do not count)
}

TEST_CASE(
    "simulated load: batches grow while workers are busy, and no request waits past "
    "the delay once a worker can take it",
    "[serve][batching]") {
    // Two workers, each taking 1 ms per task whatever its rows (a model whose batch costs
    // about what one request does); requests every 100 us, ten times what they can do alone.
    constexpr auto service = 1000us;
    constexpr auto tick = 10us;
    constexpr auto every = 100us;
    auto p = make(16, 2, 2000us);
    std::deque<clock_type::time_point> waiting;   // arrivals
    std::vector<clock_type::time_point> done_at;  // of the tasks out
    std::vector<std::size_t> batch_sizes;
    clock_type::duration worst_wait{};
    auto now = t0;
    const auto send = [&] {
        const std::size_t n = std::min<std::size_t>(waiting.size(), 16);
        for (std::size_t i = 0; i < n; ++i) {
            worst_wait = std::max(worst_wait, now - waiting.front());
            waiting.pop_front();
        }
        p.taken(static_cast<std::int64_t>(n), n);
        p.sent();
        done_at.push_back(now + service);
        batch_sizes.push_back(n);
    };
    for (int step = 0; step < 2000; ++step, now += tick) {
        for (auto it = done_at.begin(); it != done_at.end();) {
            if (*it <= now) {
                it = done_at.erase(it);
                p.task_done();
                if (p.send_on_task_done()) {
                    send();
                }
            } else {
                ++it;
            }
        }
        if (step % (every / tick) == 0) {
            waiting.push_back(now);
            p.arrived(now, 1);
            while (p.send_on_arrival()) {
                send();
            }
        }
        while (!waiting.empty() && p.send_on_timer(now, waiting.front())) {
            send();
        }
    }
    REQUIRE(batch_sizes.size() > 10);
    std::size_t rows = 0;
    for (auto b : batch_sizes) {
        rows += b;
    }
    const double mean = static_cast<double>(rows) / static_cast<double>(batch_sizes.size());
    INFO("batches " << batch_sizes.size() << ", mean rows " << mean);
    CHECK(mean >= 4.0);  // two workers at 1 ms each keep up with 10 requests a ms only so
    CHECK(p.tasks_out() <= 4);
    // Each waited at most the delay plus one task's time (behind a busy worker).
    CHECK(worst_wait <= 2000us + service);
}
