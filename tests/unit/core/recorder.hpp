// Test support: an observer that writes down every change a supervised child tells, in
// words, and a helper that takes the actions a unit decided.
#pragma once

#include "core/actions.hpp"
#include "core/supervised_child.hpp"

#include <catch2/catch.hpp>

#include <sstream>
#include <string>
#include <utility>
#include <vector>

// A sequence of actions, one a line, as a failed match prints it.
template <>
struct Catch::StringMaker<std::vector<torchpool::core::action>> {
    static std::string convert(const std::vector<torchpool::core::action>& actions) {
        std::ostringstream text;
        text << actions.size() << " actions:";
        for (const auto& a : actions) {
            text << "\n  " << a;
        }
        return text.str();
    }
};

namespace torchpool::core::test {

inline const time_point t0{std::chrono::seconds(1000)};

/// Milliseconds since t0, for messages.
inline long long ms_after_t0(time_point t) {
    if (t == time_point::max()) {
        return -1;
    }
    return std::chrono::duration_cast<std::chrono::milliseconds>(t - t0).count();
}

struct recorder final : supervised_child::observer {
    std::vector<std::string> seen;

    void on_child_state(std::size_t id, child_state from, child_state to) override {
        seen.push_back("child " + std::to_string(id) + ": " + to_string(from) + " -> " +
                       to_string(to));
    }
    void on_child_timer(std::size_t id, time_point, time_point to) override {
        seen.push_back("child " + std::to_string(id) + ": timer " +
                       (to == time_point::max()
                            ? std::string("off")
                            : "at +" + std::to_string(ms_after_t0(to)) + " ms"));
    }
    std::vector<std::string> take() { return std::exchange(seen, {}); }
};

inline std::vector<action> take(action_queue& q) {
    std::vector<action> out(q.begin(), q.end());
    q.clear();
    return out;
}

}  // namespace torchpool::core::test
