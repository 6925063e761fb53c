// Admission and the choice of worker: idle first, then (with prefetch) busy workers with
// room, round robin.
#include "core/dispatch.hpp"

#include <catch2/catch.hpp>

#include <map>

using namespace torchpool::core;

TEST_CASE("a task is admitted unless the pool shuts down, is degraded, or its queue is full",
          "[dispatch]") {
    CHECK(admit(true, false, 3, 4) == admission::admitted);
    CHECK(admit(true, false, 4, 4) == admission::queue_full);
    CHECK(admit(true, true, 0, 4) == admission::degraded);
    CHECK(admit(false, true, 4, 4) == admission::shutting_down);
}

TEST_CASE("the worker that became idle last takes the next task", "[dispatch]") {
    dispatcher d(3, 0);
    const auto none_busy = [](slot_id) { return std::optional<std::size_t>(); };
    CHECK(d.pick(none_busy) == std::nullopt);
    d.became_idle(0);
    d.became_idle(2);
    d.became_idle(1);
    d.not_idle(2);  // it died while idle
    CHECK(d.pick(none_busy) == slot_id{1});
    CHECK(d.pick(none_busy) == slot_id{1});  // picked, not yet sent anything: still idle
    d.not_idle(1);                           // sent its task
    CHECK(d.pick(none_busy) == slot_id{0});
    d.not_idle(0);
    CHECK(d.pick(none_busy) == std::nullopt);
    CHECK(d.idle_count() == 0);
}

TEST_CASE("with prefetch, busy workers with room take tasks in turn", "[dispatch]") {
    dispatcher d(3, 1);                                      // one task ahead of the running one
    std::map<slot_id, std::size_t> held = {{0, 1}, {2, 1}};  // slot 1 is not busy
    const auto busy_with = [&](slot_id s) -> std::optional<std::size_t> {
        auto it = held.find(s);
        return it == held.end() ? std::nullopt : std::optional<std::size_t>(it->second);
    };
    CHECK(d.pick(busy_with) == slot_id{0});
    held[0] = 2;
    CHECK(d.pick(busy_with) == slot_id{2});
    held[2] = 2;
    CHECK(d.pick(busy_with) == std::nullopt);  // both hold 1 + prefetch
    held[0] = 1;                               // slot 0 answered one
    CHECK(d.pick(busy_with) == slot_id{0});
}
