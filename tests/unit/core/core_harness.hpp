// The pool core under test: a pool_core with a simulated clock, the actions it decided, and
// steps that bring its workers up, for the scenario tests of the core.
#pragma once

#include "core/pool_core.hpp"
#include "recorder.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace torchpool::core::testing {

using namespace std::chrono_literals;

/// One action of an expected sequence: an action compared whole (its operator==), or a
/// pattern for the two whose details are data and words: a task's completion (its task and
/// error; the result is checked apart where it matters) and a worker event (its kind and slot).
class expected {
public:
    template <class A>
    requires std::is_constructible_v<action, A> expected(
        A a)  // NOLINT: implicit, so that a sequence lists plain actions
        : text_(describe(action(a))),
          matches_([want = action(std::move(a))](const action& got) { return got == want; }) {}

    static expected completes(task_id task, boost::system::error_code error = {}) {
        std::ostringstream text;
        text << "complete{task " << task << ", " << (error ? error.message() : "success")
             << ", any result}";
        return expected(text.str(), [=](const action& got) {
            const auto* c = std::get_if<complete_action>(&got);
            return c && c->task == task && c->error == error;
        });
    }
    static expected notifies(worker_event::kind what, slot_id slot = 0) {
        std::ostringstream text;
        text << "notify{" << kind_name(what) << ", slot " << slot << ", any words}";
        return expected(text.str(), [=](const action& got) {
            const auto* n = std::get_if<notify_action>(&got);
            return n && n->event.what == what && n->event.slot == slot;
        });
    }

    bool matches(const action& got) const { return matches_(got); }
    const std::string& text() const { return text_; }

private:
    expected(std::string text, std::function<bool(const action&)> m)
        : text_(std::move(text)), matches_(std::move(m)) {}
    static std::string describe(const action& a) {
        std::ostringstream out;
        out << a;
        return out.str();
    }

    std::string text_;
    std::function<bool(const action&)> matches_;
};

/// Matches the actions an event produced when they are exactly `want`, in order:
/// `CHECK_THAT(h.take(), actions_are({spawn_action{0}, expected::completes(7)}))`. A failure
/// prints both sequences whole, at the test's line.
class actions_matcher : public Catch::MatcherBase<std::vector<action>> {
public:
    explicit actions_matcher(std::vector<expected> want) : want_(std::move(want)) {}

    bool match(const std::vector<action>& got) const override {
        if (got.size() != want_.size()) {
            return false;
        }
        for (std::size_t i = 0; i < got.size(); ++i) {
            if (!want_[i].matches(got[i])) {
                return false;
            }
        }
        return true;
    }
    std::string describe() const override {
        std::ostringstream text;
        text << "is exactly these " << want_.size() << " actions:";
        for (const auto& e : want_) {
            text << "\n  " << e.text();
        }
        return text.str();
    }

private:
    std::vector<expected> want_;
};

inline actions_matcher actions_are(std::initializer_list<expected> want) {
    return actions_matcher(std::vector<expected>(want));
}

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
        if (std::getenv("PRINT_ACTIONS")) {
            std::cerr << "TAKE " << Catch::StringMaker<std::vector<action>>::convert(out) << "\n";
        }
        return out;
    }

    // Starts the pool and brings every worker to idle, pids 100, 101, ...
    void start_all_ready() {
        REQUIRE(core.start(now));
        const auto spawns = take();
        REQUIRE(spawns.size() == params.workers);
        for (const auto& a : spawns) {
            REQUIRE(std::holds_alternative<spawn_action>(a));
            const auto slot = std::get<spawn_action>(a).slot;
            core.on_spawned(slot, 100 + static_cast<int>(slot), now);
            core.on_message(slot, wire::hello_msg{.protocol_version = wire::protocol_version}, now);
        }
        take();
    }

    // Time passes until the slot's restart is due; its new process starts and says hello.
    void restart_when_due(slot_id slot, int pid) {
        now = *core.next_deadline();
        core.on_timer(now);
        REQUIRE_THAT(take(), actions_are({spawn_action{slot}}));
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
