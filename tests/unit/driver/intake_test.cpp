// The driver's intake of a request: what is refused and why, the deadline and options it gets,
// and the frame its worker will read.
#include "driver/intake.hpp"

#include "wire/frame_reader.hpp"

#include <catch2/catch.hpp>

#include <cstring>

using namespace torchpool;
using namespace torchpool::detail;
using namespace std::chrono_literals;

namespace {

const core::time_point now{std::chrono::seconds(1000)};

std::string refused(request req, intake_rules rules = {}) {
    auto r = take_in(7, req, now, rules);
    REQUIRE(std::holds_alternative<std::string>(r));
    return std::get<std::string>(r);
}

taken_request taken(request req, intake_rules rules = {}) {
    auto r = take_in(7, req, now, rules);
    REQUIRE(std::holds_alternative<taken_request>(r));
    return std::move(std::get<taken_request>(r));
}

// The request its worker reads from the frame.
wire::request_msg as_read(const wire::gathered_frame& gathered) {
    wire::frame_reader reader(1 << 20);
    const auto f = gathered.joined();
    const auto bytes = f.asBytes();
    auto space = reader.prepare(bytes.size());
    std::memcpy(space.data(), bytes.begin(), bytes.size());
    reader.commit(bytes.size());
    auto next = reader.next();
    REQUIRE(next.has_frame());
    auto decoded = wire::decode(next.words);
    REQUIRE(std::holds_alternative<wire::message>(decoded));
    return std::get<wire::request_msg>(std::get<wire::message>(decoded));
}

}  // namespace

TEST_CASE(
    "intake refuses a request without a method, with a bad tensor, or with a fault the "
    "pool does not allow, saying what to do",
    "[driver][intake]") {
    CHECK_THAT(refused(request("")), Catch::Contains("no method name"));
    tensor bad(dtype::float32, {2, 2});
    bad.data.resize(3);  // 2x2 floats take 16 bytes
    CHECK_THAT(refused(request("m", {}, {bad})), Catch::StartsWith("Tensor 0 of the request"));
    auto crash = request("m").with_fault(fault::crash(11));
    CHECK_THAT(refused(crash), Catch::Contains("set pool_params::faults.enabled"));
    CHECK(std::holds_alternative<taken_request>(take_in(7, crash, now, {.faults_enabled = true})));
}

TEST_CASE("intake gives a request its deadline: its own, else the pool's, else none",
          "[driver][intake]") {
    auto own = taken(request("m").with_timeout(50ms), {.default_timeout = 300ms});
    CHECK(own.options.timeout == 50ms);
    auto read = as_read(*own.frame);
    CHECK(read.deadline_ns ==
          static_cast<std::uint64_t>(
              std::chrono::nanoseconds((now + 50ms).time_since_epoch()).count()));
    auto pools = taken(request("m"), {.default_timeout = 300ms});
    CHECK(pools.options.timeout == 300ms);
    CHECK(as_read(*pools.frame).deadline_ns ==
          static_cast<std::uint64_t>(
              std::chrono::nanoseconds((now + 300ms).time_since_epoch()).count()));
    auto none = taken(request("m"));
    CHECK(none.options.timeout == 0ms);
    CHECK(as_read(*none.frame).deadline_ns == 0);
}

TEST_CASE(
    "intake carries a request's options, its fingerprint when the core wants it, and "
    "its frame",
    "[driver][intake]") {
    auto req = request("forward", "payload", {tensor(dtype::int32, {1}, std::string(4, '\0'))});
    req.retries = 2;
    req.priority = task_priority::high;
    req.if_full = when_full::wait;
    const auto plain = taken(req);
    CHECK(plain.options.retries == 2);
    CHECK(plain.options.priority == static_cast<std::uint8_t>(task_priority::high));
    CHECK(plain.options.wait_for_room);
    CHECK(plain.options.fingerprint == 0);
    CHECK(taken(req, {.fingerprint = true}).options.fingerprint == fingerprint(req));
    const auto read = as_read(*plain.frame);
    CHECK(read.id == 7);
    CHECK(read.method == "forward");
    CHECK(read.payload == "payload");
    REQUIRE(read.tensors.size() == 1);
    CHECK(read.tensors[0].shape == std::vector<std::int64_t>{1});
}
