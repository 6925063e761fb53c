// Start admission: slots start in the order they asked, no more than the limit at once.
#include "core/start_gate.hpp"

#include <catch2/catch.hpp>

using namespace torchpool::core;

TEST_CASE("no more starts than the limit are in progress: each one that ends lets the next",
          "[start_gate]") {
    start_gate g(4, 2);
    for (slot_id s : {2, 0, 3, 1}) {
        g.enqueue(s);
    }
    CHECK(g.next() == slot_id{2});
    g.start_began();
    CHECK(g.next() == slot_id{0});
    g.start_began();
    CHECK(g.next() == std::nullopt);
    CHECK(g.waiting(3));

    g.start_ended();
    CHECK(g.next() == slot_id{3});
    CHECK_FALSE(g.waiting(3));
    g.start_began();
    CHECK(g.next() == std::nullopt);
    CHECK(g.in_progress() == 2);
}

TEST_CASE("a slot waits once however often it asks, and a withdrawn slot is skipped",
          "[start_gate]") {
    start_gate g(3, 0);  // no limit
    g.enqueue(1);
    g.enqueue(1);
    g.enqueue(2);
    g.withdraw(1);
    CHECK(g.next() == slot_id{2});
    CHECK(g.next() == std::nullopt);
    CHECK_FALSE(g.anyone_waiting());
}
