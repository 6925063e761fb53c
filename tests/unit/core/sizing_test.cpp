// The pool's size: parked slots, growth bounded by max_workers with spares kept for
// replacements, handovers, resize.
#include "core/sizing.hpp"

#include <catch2/catch.hpp>

using namespace torchpool;
using namespace torchpool::core;
using namespace std::chrono_literals;

TEST_CASE(
    "a fixed pool has exactly its slots: recycling adds a spare per concurrent "
    "replacement",
    "[sizing]") {
    CHECK(slot_capacity({.workers = 4}) == 4);
    CHECK(slot_capacity({.workers = 4, .max_workers = 8}) == 8);
    CHECK(slot_capacity({.workers = 4, .recycle = {.max_tasks = 10, .max_at_once = 2}}) == 6);
    CHECK(slot_capacity({.workers = 4, .memory = {.soft_limit_bytes = 1 << 20}}) == 5);
}

TEST_CASE("growth stops at max_workers and leaves the spares to replacements", "[sizing]") {
    pool_sizing s({.workers = 2, .max_workers = 3, .recycle = {.max_tasks = 5}});
    REQUIRE(s.slots() == 4);
    CHECK(s.start() == std::vector<slot_id>{0, 1});
    CHECK(s.size() == 2);
    CHECK(s.take_parked(false) == slot_id{2});  // grows to 3
    CHECK_FALSE(s.take_parked(false));          // max reached: the spare is kept
    CHECK(s.may_recycle_more());
    const auto spare = s.take_parked(true);
    REQUIRE(spare == slot_id{3});
    s.replacing(*spare, 0);
    CHECK(s.size() == 3);  // the replacement does not count until it takes over
    CHECK_FALSE(s.may_recycle_more());
    CHECK(s.replaces(3) == slot_id{0});
    CHECK(s.replacement_of(0) == slot_id{3});

    // Handover: the replacement counts, the old one is leaving until it is parked.
    s.handed_over(3);
    s.leaving(0);
    CHECK(s.size() == 3);
    CHECK_FALSE(s.may_recycle_more());  // the old one still holds its slot
    s.park(0);
    CHECK(s.size() == 3);
    CHECK(s.may_recycle_more());
    CHECK(s.parked(0));
}

TEST_CASE("resize stays within the slots and sets the size the pool shrinks back to", "[sizing]") {
    pool_sizing s({.workers = 4, .min_workers = 2, .max_workers = 6});
    s.start();
    CHECK(s.resize(1) == 1);
    CHECK(s.min() == 1);        // the size it shrinks back to
    CHECK(s.resize(100) == 6);  // no more slots than max_workers
    CHECK(s.min() == 6);
    CHECK(s.max() == 6);
}

TEST_CASE("housekeeping looks ten times per the shorter of idle timeout and recycling age",
          "[sizing]") {
    CHECK(housekeeping_period({.idle_timeout = 60s}) == 6s);
    CHECK(housekeeping_period({.idle_timeout = 60s, .recycle = {.max_age = 2s}}) == 200ms);
    CHECK(housekeeping_period({.idle_timeout = 50ms}) == 10ms);  // at least 10 ms
}
