// The core under random event sequences, from fixed seeds: a simulated driver answers its
// actions the way real processes may (late, failing, crashing, killed from outside), while
// tasks are submitted, cancelled and time passes. After every event, what is derived from the
// workers' statuses must agree with them (the idle list, the counts, readiness); every task
// must complete exactly once; and a shutdown must end the run with every worker stopped.
// PRINT_ACTIONS=1 prints what the simulated driver carries out, and the exits it delivers.
#include "core/pool_core.hpp"
#include "core_harness.hpp"
#include <torchpool/error.hpp>

#include <catch2/catch.hpp>

#include <deque>
#include <map>
#include <random>
#include <set>

#include <signal.h>

using namespace torchpool;
using namespace torchpool::core;
using namespace torchpool::core::testing;

namespace {

// One slot's process as the simulated driver sees it.
struct fake_process {
    int pid = 0;  // 0: none
    bool said_hello = false;
    bool silent = false;              // never says hello (stuck while loading)
    std::deque<task_id> requests;     // sent, not answered
    std::set<task_id> cancelled;      // it was told to stop these
    std::optional<exit_status> exit;  // it is exiting: reaped on its next turn
};

// The fork server as the simulated driver sees it.
struct fake_server {
    int pid = 0;  // 0: none
    bool said_hello = false;
    std::deque<slot_id> forks;  // asked for, not answered
    std::optional<exit_status> exit;
};

class simulation {
public:
    simulation(pool_params params, std::uint32_t seed)
        : h(std::move(params), probe()), random(seed), processes(h.core.workers().size()) {}

    void run(int steps) {
        REQUIRE(h.core.start(h.now));
        drain();
        for (int i = 0; i < steps; ++i) {
            step();
            drain();
            check();
        }
        h.core.shutdown(h.now);
        drain();
        for (int i = 0; i < 20'000 && !finished; ++i) {
            if (h.core.fork_server_mode() && i % 3 == 0) {
                act_for_server();
            }
            act_for(pick_slot());
            drain();
            if (const auto next = h.core.next_deadline(); next && i % 8 == 0) {
                h.now = std::max(h.now, *next);
                h.core.on_timer(h.now);
                drain();
            }
            check();
        }
        if (!finished) {
            for (slot_id s = 0; s < processes.size(); ++s) {
                UNSCOPED_INFO("slot " << s << ": " << to_string(h.core.workers().status(s))
                                      << ", pid " << processes[s].pid << ", requests "
                                      << processes[s].requests.size() << ", exiting "
                                      << processes[s].exit.has_value() << ", timer "
                                      << to_string(h.core.workers()[s].child.due()));
            }
            UNSCOPED_INFO("fork server: sim pid "
                          << server.pid << ", exiting " << server.exit.has_value() << ", hello "
                          << server.said_hello << ", core pid " << h.core.fork_server_pid()
                          << ", ready " << h.core.stats().fork_server_ready);
            UNSCOPED_INFO("outstanding " << outstanding().size() << ", next deadline "
                                         << h.core.next_deadline().has_value() << ", queued "
                                         << h.core.stats().queue_depth << ", waiting for room "
                                         << h.core.stats().waiting_for_room);
        }
        REQUIRE(finished);
        CHECK(completed.size() == submitted.size());
        CHECK(server.pid == 0);
        for (slot_id s = 0; s < processes.size(); ++s) {
            CHECK(h.core.state_of(s) == worker_state::stopped);
        }
    }

    pool_stats stats() const { return h.core.stats(); }

private:
    bool chance(double p) { return std::uniform_real_distribution<>(0, 1)(random) < p; }
    slot_id pick_slot() {
        return std::uniform_int_distribution<slot_id>(0, processes.size() - 1)(random);
    }

    // Each worker's memory grows with the tasks it answered, now and then by a lot.
    pool_core::process_probe probe() {
        return {.memory = [this](int pid) -> std::optional<worker_memory> {
                    const auto it = memory.find(pid);
                    return worker_memory{.private_bytes = it == memory.end() ? 0 : it->second};
                },
                .available_memory = [] { return std::optional<std::uint64_t>(1ull << 40); }};
    }

    void step() {
        const int what = std::uniform_int_distribution<>(0, 99)(random);
        if (what < 30) {
            const task_id id = next_id++;
            submitted.insert(id);
            // One task in twenty kills every worker that runs it.
            const bool deadly = chance(0.05);
            if (deadly) {
                deadly_tasks.insert(id);
            }
            h.core.submit(id, deadly ? "deadly" : "m",
                          task_options{.timeout = std::chrono::milliseconds(chance(0.3) ? 200 : 0),
                                       .retries = chance(0.3) ? 2u : 0u,
                                       .priority = static_cast<std::uint8_t>(what % 3),
                                       .wait_for_room = chance(0.3)},
                          h.now);
        } else if (what < 70) {
            if (h.core.fork_server_mode() && chance(0.2)) {
                act_for_server();
            } else {
                act_for(pick_slot());
            }
        } else if (what < 85) {
            h.now += std::chrono::milliseconds(std::uniform_int_distribution<>(1, 300)(random));
            h.core.on_timer(h.now);
        } else if (what < 92) {
            if (!outstanding().empty()) {
                const auto ids = outstanding();
                const task_id id =
                    ids[std::uniform_int_distribution<std::size_t>(0, ids.size() - 1)(random)];
                h.core.cancel_task(id,
                                   chance(0.5)
                                       ? boost::asio::cancellation_type::terminal
                                       : (chance(0.5) ? boost::asio::cancellation_type::partial
                                                      : boost::asio::cancellation_type::total),
                                   h.now);
            }
        } else if (what < 97) {
            // Killed from outside (the OOM killer, an operator), now and then the fork server.
            if (h.core.fork_server_mode() && chance(0.1)) {
                if (server.pid != 0 && !server.exit) {
                    server.exit = exit_status{.signal = SIGKILL};
                }
            } else if (auto& p = processes[pick_slot()]; p.pid != 0 && !p.exit) {
                p.exit = exit_status{.signal = SIGKILL};
            }
        } else {
            h.core.resize(std::uniform_int_distribution<std::size_t>(1, 5)(random), h.now);
        }
    }

    // The slot's process does its next thing: exits if it is exiting, says hello, answers.
    void act_for(slot_id s) {
        auto& p = processes[s];
        if (p.pid == 0) {
            return;
        }
        if (p.exit) {
            const auto status = *p.exit;
            if (std::getenv("PRINT_ACTIONS")) {
                std::cerr << "EXIT slot " << s << " pid " << p.pid << "\n";
            }
            p = fake_process{};
            h.core.on_exit(s, status, h.now);
            return;
        }
        if (!p.said_hello) {
            if (p.silent) {
                return;
            }
            p.said_hello = true;
            h.core.on_message(
                s,
                wire::hello_msg{.protocol_version = wire::protocol_version,
                                .capabilities = {std::string(wire::answers_heartbeats)}},
                h.now);
            return;
        }
        if (p.requests.empty()) {
            return;
        }
        const task_id id = p.requests.front();
        p.requests.pop_front();
        if (deadly_tasks.contains(id) || chance(0.05)) {
            p.exit = exit_status{.signal = SIGSEGV};  // it crashes under the task
            return;
        }
        memory[p.pid] += chance(0.02) ? (64u << 20) : (2u << 20);
        if (p.cancelled.contains(id) && chance(0.5)) {
            // Its handler looked at the cancellation and stopped.
            h.core.on_message(
                s,
                wire::reply_msg{
                    .id = id, .ok = false, .error_type = std::string(wire::cancelled_error)},
                h.now);
            return;
        }
        const bool ok = chance(0.9);
        h.core.on_message(s,
                          wire::reply_msg{.id = id,
                                          .ok = ok,
                                          .error_type = ok ? "" : "std::runtime_error",
                                          .error_message = ok ? "" : "failed"},
                          h.now);
    }

    // The fork server does its next thing: exits, says hello, or answers a fork request (a
    // worker the slot no longer waits for is killed and reaped by the driver: dropped here).
    void act_for_server() {
        if (server.pid == 0) {
            return;
        }
        if (server.exit) {
            const auto status = *server.exit;
            server = fake_server{};
            h.core.on_server_exit(status, h.now);
            return;
        }
        if (!server.said_hello) {
            server.said_hello = true;
            h.core.on_server_hello(wire::hello_msg{.protocol_version = wire::protocol_version},
                                   h.now);
            return;
        }
        if (server.forks.empty()) {
            return;
        }
        const slot_id s = server.forks.front();
        server.forks.pop_front();
        if (!h.core.awaiting_fork(s)) {
            return;
        }
        if (chance(0.05)) {
            h.core.on_spawn_error(s, "the fork server could not make a worker: simulated", h.now);
            return;
        }
        REQUIRE(processes[s].pid == 0);
        processes[s].pid = next_pid++;
        h.core.on_spawned(s, processes[s].pid, h.now);
    }

    // Carries out the core's actions as a driver would, until none is left (answering one
    // may decide more); some are answered later (act_for).
    void drain() {
        while (!h.core.actions().empty()) {
            drain_once();
        }
    }
    void drain_once() {
        for (auto& a : h.take()) {
            if (std::getenv("PRINT_ACTIONS")) {
                std::cerr << "  " << a << "\n";
            }
            std::visit([this](auto& x) { carry_out(x); }, a);
        }
    }
    void carry_out(const spawn_action& a) {
        auto& p = processes[a.slot];
        REQUIRE(p.pid == 0);  // one process per slot at a time
        if (chance(0.05)) {
            h.core.on_spawn_error(a.slot, "simulated spawn failure", h.now);
            return;
        }
        p.pid = next_pid++;
        p.silent = chance(0.03);
        h.core.on_spawned(a.slot, p.pid, h.now);
    }
    void carry_out(const start_server_action&) {
        REQUIRE(server.pid == 0);
        server.pid = next_pid++;
        h.core.on_server_spawned(server.pid, h.now);
    }
    void carry_out(const stop_server_action& a) {
        if (server.pid != 0 && !server.exit) {
            server.exit = a.kill ? exit_status{.signal = SIGKILL} : exit_status{.exit_code = 0};
        }
    }
    void carry_out(const fork_action& a) {
        REQUIRE(server.pid != 0);
        server.forks.push_back(a.slot);
    }
    void carry_out(const send_request_action& a) {
        INFO("slot " << a.slot << " " << to_string(h.core.workers().status(a.slot)) << " core pid "
                     << h.core.workers()[a.slot].child.pid() << " task " << a.task << " attempt "
                     << a.attempt);
        REQUIRE(processes[a.slot].pid != 0);
        processes[a.slot].requests.push_back(a.task);
    }
    void carry_out(const signal_action& a) {
        auto& p = processes[a.slot];
        if (p.pid != 0 && !p.exit) {
            p.exit = exit_status{.signal = a.signo};
        }
    }
    void carry_out(const send_shutdown_action& a) {
        auto& p = processes[a.slot];
        if (p.pid != 0 && !p.exit) {
            p.exit = exit_status{.exit_code = 0};
        }
    }
    void carry_out(const send_heartbeat_action& a) {
        if (processes[a.slot].pid != 0 && chance(0.8)) {
            if (std::getenv("PRINT_ACTIONS")) {
                std::cerr << "BEAT slot " << a.slot << "\n";
            }
            h.core.on_message(a.slot, wire::heartbeat_msg{a.sequence}, h.now);
        }
    }
    void carry_out(const complete_action& a) {
        REQUIRE(submitted.contains(a.task));
        REQUIRE(completed.insert(a.task).second);  // exactly once
    }
    void carry_out(const run_finished_action&) {
        REQUIRE_FALSE(finished);
        finished = true;
    }
    void carry_out(const send_cancel_action& a) {
        if (processes[a.slot].pid != 0) {
            processes[a.slot].cancelled.insert(a.task);
        }
    }
    template <class Other>
    void carry_out(const Other&) {}  // events

    std::vector<task_id> outstanding() const {
        std::vector<task_id> out;
        for (const task_id id : submitted) {
            if (!completed.contains(id)) {
                out.push_back(id);
            }
        }
        return out;
    }

    // What is derived from the workers' statuses agrees with them.
    void check() {
        const auto& w = h.core.workers();
        std::size_t total = 0;
        for (std::size_t i = 0; i < worker_statuses; ++i) {
            total += w.count(static_cast<worker_status>(i));
        }
        REQUIRE(total == w.size());
        REQUIRE(w.idle_listed() == w.count(worker_status::idle));
        REQUIRE(w.gate().in_progress() == w.count(worker_status::starting));
        REQUIRE(w.gate().waiting_count() == w.count(worker_status::waiting));
        REQUIRE(h.core.health().ready_workers == w.ready_count());
        for (slot_id s = 0; s < w.size(); ++s) {
            if (w.status(s) == worker_status::idle) {
                REQUIRE(processes[s].pid != 0);
            }
        }
    }

    harness h;
    std::mt19937 random;
    std::vector<fake_process> processes;
    fake_server server;
    std::set<task_id> submitted;
    std::set<task_id> completed;
    std::set<task_id> deadly_tasks;
    std::map<int, std::uint64_t> memory;  // by pid
    task_id next_id = 1;
    int next_pid = 1000;
    bool finished = false;
};

// Runs the simulation from seeds 1..`seeds`, `steps` events each; returns their counters
// summed (the paths the seeds took).
pool_stats run_seeds(const pool_params& params, std::uint32_t seeds, int steps) {
    pool_stats seen;
    for (std::uint32_t seed = 1; seed <= seeds; ++seed) {
        CAPTURE(seed);
        simulation sim(params, seed);
        sim.run(steps);
        const auto st = sim.stats();
        for (auto field : {&pool_stats::succeeded, &pool_stats::task_failed, &pool_stats::timed_out,
                           &pool_stats::cancelled, &pool_stats::worker_died, &pool_stats::retried,
                           &pool_stats::poison_tasks, &pool_stats::overloaded,
                           &pool_stats::recycled, &pool_stats::unresponsive, &pool_stats::restarts,
                           &pool_stats::failed_starts, &pool_stats::memory_kills,
                           &pool_stats::fork_server_deaths, &pool_stats::fork_server_starts}) {
            seen.*field += st.*field;
        }
    }
    return seen;
}

}  // namespace

TEST_CASE("random events keep every derived state right and complete every task once",
          "[core][invariants]") {
    pool_params params{.worker = {.executable = "/bin/true"},
                       .workers = 3,
                       .min_workers = 2,
                       .max_workers = 5,
                       .idle_timeout = std::chrono::milliseconds(500),
                       .recycle = {.max_tasks = 4},
                       .queue_limit = 8,
                       .prefetch = 1,
                       .heartbeat_interval = std::chrono::milliseconds(400),
                       .heartbeat_timeout = std::chrono::milliseconds(300),
                       .restart_backoff = {.initial = std::chrono::milliseconds(5),
                                           .max = std::chrono::milliseconds(50)},
                       .poison = {.deaths = 3}};
    const pool_stats seen = run_seeds(params, 25, 1500);
    // The seeds reach every path the simulation can take, so the checks above were made on
    // all of them.
    CHECK(seen.succeeded > 0);
    CHECK(seen.task_failed > 0);
    CHECK(seen.timed_out > 0);
    CHECK(seen.cancelled > 0);
    CHECK(seen.worker_died > 0);
    CHECK(seen.retried > 0);
    CHECK(seen.overloaded > 0);
    CHECK(seen.recycled > 0);
    CHECK(seen.unresponsive > 0);
    CHECK(seen.restarts > 0);
    CHECK(seen.failed_starts > 0);
    CHECK(seen.poison_tasks > 0);
}

TEST_CASE("random events on a single worker without prefetch keep the same promises",
          "[core][invariants]") {
    pool_params params{.worker = {.executable = "/bin/true"},
                       .workers = 1,
                       .recycle = {.max_tasks = 2},
                       .queue_limit = 2,
                       .heartbeat_interval = std::chrono::milliseconds(400),
                       .heartbeat_timeout = std::chrono::milliseconds(300),
                       .restart_backoff = {.initial = std::chrono::milliseconds(5),
                                           .max = std::chrono::milliseconds(50)},
                       .poison = {.deaths = 2, .quarantine = 4}};
    CHECK(run_seeds(params, 100, 600).succeeded > 0);
}

TEST_CASE("random events with workers made by a fork server that may die keep the same promises",
          "[core][invariants]") {
    pool_params params{.worker = {.executable = "/bin/true", .start = start_mode::fork_server},
                       .workers = 3,
                       .max_workers = 4,
                       .idle_timeout = std::chrono::milliseconds(500),
                       .recycle = {.max_tasks = 5},
                       .queue_limit = 8,
                       .heartbeat_interval = std::chrono::milliseconds(400),
                       .heartbeat_timeout = std::chrono::milliseconds(300),
                       .restart_backoff = {.initial = std::chrono::milliseconds(5),
                                           .max = std::chrono::milliseconds(50)},
                       .poison = {.deaths = 3}};
    const pool_stats seen = run_seeds(params, 50, 800);
    CHECK(seen.fork_server_deaths > 0);  // the fork server died under them, and came back
    CHECK(seen.fork_server_starts > 50);
    CHECK(seen.succeeded > 0);
}

TEST_CASE(
    "random events with memory limits and workers that hang while loading keep the same "
    "promises",
    "[core][invariants]") {
    pool_params params{.worker = {.executable = "/bin/true"},
                       .workers = 3,
                       .max_workers = 4,
                       .idle_timeout = std::chrono::milliseconds(500),
                       .recycle = {.max_age = std::chrono::milliseconds(2000), .max_at_once = 2},
                       .queue_limit = 8,
                       .prefetch = 1,
                       .spawn_timeout = std::chrono::milliseconds(300),
                       .load_timeout = std::chrono::milliseconds(300),
                       .max_concurrent_starts = 2,
                       .heartbeat_interval = std::chrono::milliseconds(400),
                       .heartbeat_timeout = std::chrono::milliseconds(300),
                       .memory = {.soft_limit_bytes = 20u << 20,
                                  .hard_limit_bytes = 60u << 20,
                                  .sample_interval = std::chrono::milliseconds(100)},
                       .restart_backoff = {.initial = std::chrono::milliseconds(5),
                                           .max = std::chrono::milliseconds(50)},
                       .cancel_grace = std::chrono::milliseconds(200),
                       .poison = {.deaths = 3, .quarantine = 8}};
    const pool_stats seen = run_seeds(params, 40, 1000);
    CHECK(seen.memory_kills > 0);
    CHECK(seen.recycled > 0);
    CHECK(seen.failed_starts > 0);
}
