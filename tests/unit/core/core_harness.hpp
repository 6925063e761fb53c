// The pool core under test: a pool_core with a simulated clock, the actions it decided, and
// steps that bring its workers up, for the scenario tests of the core.
#pragma once

#include "core/pool_core.hpp"

#include <catch2/catch.hpp>

#include <memory>
#include <vector>

namespace torchpool::core::testing {

using namespace std::chrono_literals;

struct harness {
    // The core is not movable (its units refer to each other); the harness is, so that
    // ready_harness can return one.
    explicit harness(pool_params p, pool_core::process_probe probe = {})
        : params(std::move(p)),
          owned(std::make_unique<pool_core>(params, std::move(probe))),
          core(*owned) {}

    std::vector<action> take() {
        std::vector<action> out(core.actions().begin(), core.actions().end());
        core.actions().clear();
        return out;
    }

    template <class A>
    static std::vector<A> only(const std::vector<action>& actions) {
        std::vector<A> out;
        for (const auto& a : actions) {
            if (auto* x = std::get_if<A>(&a)) {
                out.push_back(*x);
            }
        }
        return out;
    }

    // Starts the pool and brings every worker to idle, pids 100, 101, ...
    void start_all_ready() {
        REQUIRE(core.start(now));
        auto spawns = only<spawn_action>(take());
        REQUIRE(spawns.size() == params.workers);
        for (auto& s : spawns) {
            core.on_spawned(s.slot, 100 + static_cast<int>(s.slot), now);
            core.on_message(s.slot, wire::hello_msg{.protocol_version = wire::protocol_version},
                            now);
        }
        take();
    }

    // Time passes until the slot's restart is due; its new process starts and says hello.
    void restart_when_due(slot_id slot, int pid) {
        now = *core.next_deadline();
        core.on_timer(now);
        REQUIRE(only<spawn_action>(take()).size() == 1);
        core.on_spawned(slot, pid, now);
        core.on_message(slot, wire::hello_msg{.protocol_version = wire::protocol_version}, now);
    }

    void advance(std::chrono::milliseconds d) {
        now += d;
        core.on_timer(now);
    }

    pool_params params;
    std::unique_ptr<pool_core> owned;
    pool_core& core;
    time_point now{std::chrono::seconds(1000)};
};

inline pool_params two_workers() {
    return {.worker = {.executable = "/bin/true"}, .workers = 2, .queue_limit = 4};
}

inline pool_params one_worker(std::size_t prefetch = 0) {
    auto params = two_workers();
    params.workers = 1;
    params.prefetch = prefetch;
    return params;
}

// A pool whose workers have all started and said hello.
inline harness ready_harness(pool_params params) {
    harness h(std::move(params));
    h.start_all_ready();
    return h;
}

}  // namespace torchpool::core::testing
