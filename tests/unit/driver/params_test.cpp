// The pool's parameters resolved in one place: defaults from the machine's cores, a clear
// error per bad value, and what the workers' environment and the descriptor budget become.
#include "driver/params.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <stdexcept>

using namespace torchpool;
using namespace torchpool::detail;

namespace {
pool_params basic(std::size_t workers) {
    return {.worker = {.executable = "/bin/true"}, .workers = workers};
}
bool has(const std::vector<std::string>& env, const std::string& entry) {
    return std::find(env.begin(), env.end(), entry) != env.end();
}
}  // namespace

TEST_CASE("threads per worker share the cores out, and starts default to twice the cores",
          "[params]") {
    const auto p = resolve(basic(4), 16);
    CHECK(p.intra_op_threads == 4);
    CHECK(p.inter_op_threads == 4);
    CHECK(p.max_concurrent_starts == 32);

    const auto many = resolve(basic(64), 8);  // more workers than cores: one thread each
    CHECK(many.intra_op_threads == 1);
    CHECK(many.max_concurrent_starts == 16);

    auto chosen = basic(2);
    chosen.intra_op_threads = 3;
    CHECK(resolve(chosen, 16).intra_op_threads == 3);  // what the user set stays
}

TEST_CASE("a bad parameter is refused with its name", "[params]") {
    CHECK_THROWS_WITH(resolve(pool_params{}, 4), Catch::Contains("worker::executable is empty"));
    CHECK_THROWS_WITH(resolve(basic(0), 4), Catch::Contains("workers must be at least 1"));
    auto p = basic(2);
    p.max_workers = 1;
    CHECK_THROWS_WITH(resolve(p, 4), Catch::Contains("<= max_workers (1)"));
    p = basic(2);
    p.memory.soft_limit_bytes = 200;
    p.memory.hard_limit_bytes = 100;
    CHECK_THROWS_WITH(resolve(p, 4), Catch::Contains("soft_limit_bytes must be below"));
    p = basic(2);
    p.queue_limit = 0;
    CHECK_THROWS_AS(resolve(p, 4), std::invalid_argument);
}

TEST_CASE("workers learn their threads from the environment, and a fork server its helpers",
          "[params]") {
    auto p = resolve(basic(2), 8);
    auto env = worker_environment(p, 8);
    CHECK(has(env, "TORCHPOOL_INTRA_OP_THREADS=4"));
    CHECK(has(env, "OMP_NUM_THREADS=4"));
    CHECK_FALSE(has(env, "TORCHPOOL_FORK_SERVER=1"));

    p.worker.start = start_mode::fork_server;
    env = worker_environment(p, 8);
    CHECK(has(env, "TORCHPOOL_FORK_SERVER=1"));
    CHECK(has(env, "TORCHPOOL_FORK_SERVER_HELPERS=7"));
    // Three descriptors per slot, and the fork server's three plus one per helper's pidfd.
    CHECK(descriptors_needed(p, 8) == 1 + 3 * 2 + 3 + 8);
}
