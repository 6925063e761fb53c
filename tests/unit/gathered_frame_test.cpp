// A request's frame as the host writes it: a head in a reused buffer, then the caller's own
// tensor bytes where they are (no copy), each padded to whole words; and what any standard
// Cap'n Proto reader makes of it.
#include "wire/codec.hpp"
#include "wire/frame_buffers.hpp"

#include <catch2/catch.hpp>

#include <cstring>

using namespace torchpool;

namespace {

wire::request_msg decoded(const wire::gathered_frame& f) {
    const auto words = f.joined();
    auto d = wire::decode(std::span<const capnp::word>(words.begin(), words.size()));
    REQUIRE(std::holds_alternative<wire::message>(d));
    return std::get<wire::request_msg>(std::get<wire::message>(d));
}

tensor bytes_tensor(std::size_t n, char fill) {
    return tensor(dtype::uint8, {static_cast<std::int64_t>(n)}, std::string(n, fill));
}

}  // namespace

TEST_CASE("a request's large tensors are written from where the caller put them",
          "[wire][frames]") {
    request req("m", "payload",
                {bytes_tensor(5001, 'x'), bytes_tensor(10, 's'), bytes_tensor(4096, 'y')});
    const void* caller_x = req.tensors[0].data.data();
    const void* caller_y = req.tensors[2].data.data();
    const auto f = wire::encode_request(3, 0, req);
    // The head, 5001 bytes where they were and 8 - 5001 % 8 of padding, 4096 where they were.
    const auto pieces = f.pieces();
    REQUIRE(pieces.size() == 4);
    CHECK(pieces[1].iov_base == caller_x);
    CHECK(pieces[1].iov_len == 5001);
    CHECK(pieces[2].iov_len == 8 - 5001 % 8);
    CHECK(pieces[3].iov_base == caller_y);
    CHECK(pieces[3].iov_len == 4096);
    CHECK(f.size() % 8 == 0);
    CHECK(pieces[0].iov_len < 400);  // the small tensor, inline, and no large one
    // The frame owns them now; the request's tensors are left without bytes.
    CHECK(req.tensors[0].data.empty());
    CHECK(req.tensors[1].data == std::string(10, 's'));
    const auto r = decoded(f);
    CHECK(r.id == 3);
    CHECK(r.payload == "payload");
    REQUIRE(r.tensors.size() == 3);
    CHECK(r.tensors[0].data == std::string(5001, 'x'));
    CHECK(r.tensors[1].data == std::string(10, 's'));
    CHECK(r.tensors[2].data == std::string(4096, 'y'));
    // Padding is zeros, not whatever follows the caller's bytes.
    const auto words = f.joined();
    const auto* raw = reinterpret_cast<const unsigned char*>(words.begin());
    const std::size_t padding_at = pieces[0].iov_len + 5001;
    for (std::size_t i = 0; i < pieces[2].iov_len; ++i) {
        CHECK(raw[padding_at + i] == 0);
    }
}

TEST_CASE("past 64 referred tensors, the rest are copied into the frame", "[wire][frames]") {
    std::vector<tensor> many;
    for (int i = 0; i < 70; ++i) {
        many.push_back(
            bytes_tensor(1024 + 8 * static_cast<std::size_t>(i), static_cast<char>('a' + i % 26)));
    }
    request req("m", {}, std::move(many));
    const auto f = wire::encode_request(1, 0, req);
    CHECK(f.pieces().size() == 65);  // whole words: no padding pieces
    const auto r = decoded(f);
    REQUIRE(r.tensors.size() == 70);
    for (int i = 0; i < 70; ++i) {
        CHECK(r.tensors[static_cast<std::size_t>(i)].data ==
              std::string(1024 + 8 * static_cast<std::size_t>(i), static_cast<char>('a' + i % 26)));
    }
}

TEST_CASE("a frame's buffer is reused, zeroed, once the frame is gone", "[wire][frames]") {
    request first("m", std::string(3000, 'p'));
    const void* head = nullptr;
    {
        const auto f = wire::encode_request(1, 0, first);
        head = f.pieces()[0].iov_base;
    }
    const auto kept = wire::frame_buffers_kept();
    CHECK(kept >= 1);
    // The next frame of that size takes the same buffer, and reads as if it were fresh.
    request second("n", std::string(2000, 'q'));
    const auto f = wire::encode_request(2, 0, second);
    CHECK(f.pieces()[0].iov_base == head);
    CHECK(wire::frame_buffers_kept() == kept - 1);
    const auto r = decoded(f);
    CHECK(r.method == "n");
    CHECK(r.payload == std::string(2000, 'q'));
    CHECK(r.tensors.empty());
}

TEST_CASE("a worker writes a large inline result from where the handler left it",
          "[wire][frames]") {
    // Word-aligned bytes followed by bytes that must never reach the wire.
    std::vector<std::uint64_t> storage(512, ~std::uint64_t{0});
    auto* base = reinterpret_cast<std::byte*>(storage.data());
    std::memset(base, 'r', 2001);
    std::memset(base + 2048, 'u', 1501);
    std::vector<tensor_view> tensors(2);
    tensors[0] = {dtype::uint8, {2001}, std::span<const std::byte>(base, 2001)};
    // Not word-aligned: copied into the message instead.
    tensors[1] = {dtype::uint8, {1500}, std::span<const std::byte>(base + 2048 + 1, 1500)};
    const wire::reply_view reply{.id = 9, .payload = "p", .tensors = tensors};
    std::string written;
    std::vector<iovec> seen;
    REQUIRE(wire::encode_to(reply, [&](std::span<const iovec> parts) {
        seen.assign(parts.begin(), parts.end());
        for (const auto& p : parts) {
            written.append(static_cast<const char*>(p.iov_base), p.iov_len);
        }
        return true;
    }));
    // Table, first segment, the 2001 bytes where they are, 7 bytes of zeros.
    REQUIRE(seen.size() == 4);
    CHECK(seen[2].iov_base == base);
    CHECK(seen[2].iov_len == 2001);
    CHECK(seen[3].iov_len == 7);
    CHECK(written.find(std::string(7, '\0'), written.find(std::string(2001, 'r')) + 2001) ==
          written.find(std::string(2001, 'r')) + 2001);
    REQUIRE(written.size() % 8 == 0);
    auto words = kj::heapArray<capnp::word>(written.size() / 8);
    std::memcpy(words.begin(), written.data(), written.size());
    auto d = wire::decode(std::span<const capnp::word>(words.begin(), words.size()));
    REQUIRE(std::holds_alternative<wire::message>(d));
    const auto& r = std::get<wire::reply_msg>(std::get<wire::message>(d));
    CHECK(r.id == 9);
    REQUIRE(r.tensors.size() == 2);
    CHECK(r.tensors[0].data == std::string(2001, 'r'));
    CHECK(r.tensors[1].data == std::string(1500, 'u'));
}

TEST_CASE("a message that outgrows its first segment is flattened whole", "[wire][frames]") {
    // A hello's first segment is sized for a few methods; 300 take more segments.
    wire::hello_msg hello{.pid = 42, .protocol_version = 2};
    for (int i = 0; i < 300; ++i) {
        hello.methods.push_back("method_number_" + std::to_string(i));
    }
    const auto f = wire::encode(hello);
    std::uint32_t segments_less_one = 0;
    std::memcpy(&segments_less_one, f.begin(), sizeof segments_less_one);
    CHECK(segments_less_one >= 1);
    auto d = wire::decode(std::span<const capnp::word>(f.begin(), f.size()));
    REQUIRE(std::holds_alternative<wire::message>(d));
    const auto& h = std::get<wire::hello_msg>(std::get<wire::message>(d));
    CHECK(h.pid == 42);
    REQUIRE(h.methods.size() == 300);
    CHECK(h.methods[299] == "method_number_299");
}
