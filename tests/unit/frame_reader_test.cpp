#include "wire/frame_reader.hpp"

#include "wire/codec.hpp"
#include <torchpool/error.hpp>

#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

using namespace torchpool;
using namespace torchpool::wire;

namespace {

std::string bytes_of(const frame& f) {
    auto b = f.asBytes();
    return {reinterpret_cast<const char*>(b.begin()), b.size()};
}

void feed(frame_reader& reader, std::string_view bytes) {
    auto space = reader.prepare(bytes.size());
    std::memcpy(space.data(), bytes.data(), bytes.size());
    reader.commit(bytes.size());
}

std::string header(std::vector<std::uint32_t> words) {
    // words[0] is segment count - 1, then sizes; padded to 8 bytes.
    std::string out(reinterpret_cast<const char*>(words.data()), words.size() * 4);
    out.resize((out.size() + 7) / 8 * 8, '\0');
    return out;
}

}  // namespace

TEST_CASE("whole frames come out one at a time, however the bytes are split", "[wire]") {
    const std::string a = bytes_of(encode(heartbeat_msg{1}));
    const std::string b = bytes_of(encode(reply_msg{.id = 2, .payload = std::string(1000, 'x')}));
    const std::string stream = a + b;

    for (std::size_t chunk : {std::size_t{1}, std::size_t{3}, std::size_t{8}, stream.size()}) {
        frame_reader reader(1 << 20);
        std::vector<message> got;
        for (std::size_t at = 0; at < stream.size(); at += chunk) {
            feed(reader, std::string_view(stream).substr(at, chunk));
            for (auto next = reader.next(); next.has_frame(); next = reader.next()) {
                auto decoded = decode(next.words);
                REQUIRE(std::holds_alternative<message>(decoded));
                got.push_back(std::get<message>(decoded));
            }
        }
        REQUIRE(got.size() == 2);
        CHECK(std::get<heartbeat_msg>(got[0]).sequence == 1);
        CHECK(std::get<reply_msg>(got[1]).payload.size() == 1000);
        CHECK(!reader.finish());
    }
}

TEST_CASE("a frame over the limit is rejected from its header alone", "[wire]") {
    frame_reader reader(4096);
    feed(reader, header({0, 1024}));  // 8 + 8192 bytes announced
    auto next = reader.next();
    CHECK(!next.has_frame());
    CHECK(next.error == errc::frame_too_large);
    CHECK(reader.rejected_frame_bytes() == 8 + 8192);
}

TEST_CASE("a segment table with too many segments is malformed", "[wire]") {
    frame_reader reader(1 << 20);
    feed(reader, header({0xffffffffu}));
    CHECK(reader.next().error == errc::frame_malformed);
}

TEST_CASE("a frame with no content is malformed", "[wire]") {
    frame_reader reader(1 << 20);
    feed(reader, header({0, 0}));
    CHECK(reader.next().error == errc::frame_malformed);
}

TEST_CASE("end of stream inside a frame is truncation", "[wire]") {
    const std::string a = bytes_of(encode(heartbeat_msg{1}));
    frame_reader reader(1 << 20);
    feed(reader, std::string_view(a).substr(0, a.size() - 1));
    CHECK(!reader.next().has_frame());
    CHECK(reader.finish() == errc::frame_truncated);
}

TEST_CASE("a frame whose pointers leave the segment fails to decode, without throwing", "[wire]") {
    std::string raw = header({0, 2});
    const std::uint64_t body[2] = {0x7fffffff0000fffcu, 0};
    raw.append(reinterpret_cast<const char*>(body), sizeof body);
    frame_reader reader(1 << 20);
    feed(reader, raw);
    auto next = reader.next();
    REQUIRE(next.has_frame());
    auto decoded = decode(next.words);
    REQUIRE(std::holds_alternative<decode_error>(decoded));
    CHECK_THAT(std::get<decode_error>(decoded).what, Catch::Contains("not a valid"));
}

TEST_CASE("every message kind survives a round trip", "[wire]") {
    tensor t(dtype::int32, {2, 2}, std::string(16, '\1'));
    const std::vector<message> all = {
        hello_msg{.pid = 42,
                  .protocol_version = 1,
                  .capabilities = {"tensors"},
                  .methods = {"echo", "forward"}},
        request_msg{
            .id = 7, .method = "forward", .deadline_ns = 123, .payload = "p", .tensors = {t}},
        reply_msg{.id = 7, .ok = false, .error_type = "E", .error_message = "m"},
        cancel_msg{.id = 9},
        heartbeat_msg{.sequence = 3},
        shutdown_msg{},
    };
    for (const auto& m : all) {
        auto f = std::visit([](const auto& x) { return encode(x); }, m);
        auto decoded = decode(std::span<const capnp::word>(f.begin(), f.size()));
        REQUIRE(std::holds_alternative<message>(decoded));
        CHECK(std::get<message>(decoded).index() == m.index());
    }
    auto f = encode(std::get<request_msg>(all[1]));
    auto back = std::get<request_msg>(
        std::get<message>(decode(std::span<const capnp::word>(f.begin(), f.size()))));
    CHECK(back.method == "forward");
    CHECK(back.deadline_ns == 123);
    REQUIRE(back.tensors.size() == 1);
    CHECK(back.tensors[0].shape == std::vector<std::int64_t>{2, 2});
    CHECK(back.tensors[0].data == t.data);
}

TEST_CASE("a tensor whose bytes do not match its shape is refused by name", "[wire]") {
    tensor bad(dtype::float32, {2, 3}, std::string(12, '\0'));
    CHECK_THAT(validate_tensor(bad), Catch::Contains("12 bytes") && Catch::Contains("[2,3]") &&
                                         Catch::Contains("float32") && Catch::Contains("24"));
    auto f = encode(reply_msg{.id = 1, .tensors = {bad}});
    auto decoded = decode(std::span<const capnp::word>(f.begin(), f.size()));
    REQUIRE(std::holds_alternative<decode_error>(decoded));
    CHECK_THAT(std::get<decode_error>(decoded).what, Catch::Contains("tensor 0"));
    CHECK(validate_tensor(tensor(dtype::int64, {-1})) != "");
    CHECK(validate_tensor(tensor(dtype::uint8, {3}, "abc")).empty());
}

TEST_CASE("a reply written from its segments is the same bytes as the flat encoding", "[wire]") {
    // Around 1 KiB the message moves from the stack buffer to a heap segment.
    for (std::size_t size : {0, 10, 900, 1000, 5000}) {
        reply_msg m{.id = 9, .payload = std::string(size, 'p')};
        m.tensors.push_back(tensor(dtype::uint8, {3}, "abc"));
        const std::vector<tensor_view> views{tensor_view::of(m.tensors[0])};
        const reply_view view{.id = m.id, .payload = m.payload, .tensors = views};
        std::string written;
        CHECK(encode_to(view, [&](std::span<const iovec> parts) {
            for (const auto& p : parts) {
                written.append(static_cast<const char*>(p.iov_base), p.iov_len);
            }
            return true;
        }));
        CHECK(written == bytes_of(encode(m)));
    }
}
