// The pool's phase only moves forward.
#include "core/pool_phase.hpp"

#include <catch2/catch.hpp>

using namespace torchpool::core;

TEST_CASE("a pool runs, drains, stops and finishes, never backwards", "[pool_phase]") {
    pool_phase p;
    CHECK(p.admitting());
    CHECK_FALSE(p.started());
    CHECK(p.start());
    CHECK_FALSE(p.start());
    CHECK(p.started());  // a second start changes nothing
    CHECK(p.drain());
    CHECK(p.started());
    CHECK_FALSE(p.admitting());
    CHECK(p.ending());
    CHECK_FALSE(p.drain());
    CHECK(p.stop());  // a drain can be cut short
    CHECK_FALSE(p.drain());
    CHECK_FALSE(p.stop());
    p.finish();
    CHECK(p.finished());
    CHECK_FALSE(p.ending());
    CHECK_FALSE(p.start());
}

TEST_CASE("a pool shut down before it ran never starts", "[pool_phase]") {
    pool_phase p;
    CHECK(p.drain());
    CHECK_FALSE(p.started());
    CHECK_FALSE(p.start());
}
