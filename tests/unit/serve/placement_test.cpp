// Where a request's tensors land: the binary data of a body read straight into a block of input
// memory (request_body), and the tensors parsed from a request placed in input memory, as
// views where the bytes are there already, else written there once.
#include "feed_request_body.hpp"
#include "images_model.hpp"
#include "oip.hpp"
#include "request_body.hpp"
#include "shm/arena.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <memory>

using namespace torchpool;
using namespace torchpool::serve;
namespace http = boost::beast::http;

namespace {

// Input memory of 64 KiB, as a pool's: its blocks, and how many were asked for.
struct test_memory {
    test_memory() {
        auto made =
            shm::mapping::create("torchpool-test-inputs", 1 << 16, shm::writers::creator_only);
        REQUIRE(std::holds_alternative<std::shared_ptr<shm::mapping>>(made));
        blocks = std::make_shared<shm::arena>(std::get<std::shared_ptr<shm::mapping>>(made));
    }
    shared_bytes block(std::size_t bytes) {
        auto b = blocks->allocate(bytes);
        REQUIRE(b);
        return b->bytes(b);
    }
    input_memory memory() {
        return [this](dtype type, std::vector<std::int64_t> shape) {
            std::size_t bytes = element_size(type);
            for (const auto d : shape) {
                bytes *= static_cast<std::size_t>(d);
            }
            ++asked;
            return tensor(type, std::move(shape), block(bytes));
        };
    }
    bool holds(const tensor& t) const {
        const auto* base = blocks->memory().base();
        return t.shared && t.bytes().data() >= base &&
               t.bytes().data() + t.bytes().size() <= base + blocks->memory().size();
    }
    std::shared_ptr<shm::arena> blocks;
    int asked = 0;
};

std::string as_text(const shared_bytes& b) {
    return {reinterpret_cast<const char*>(b.bytes().data()), b.size()};
}

// Parses `head` + `body` with a request_body parser whose binary data, after `text_bytes`, is
// given `binary`; the body arrives in pieces of `piece` bytes.
http::request<request_body> read_body(const std::string& head, const std::string& body,
                                      std::size_t text_bytes, shared_bytes binary,
                                      std::size_t piece) {
    auto fed = test::feed_request_body(head, body, text_bytes, std::move(binary), piece);
    if (auto* wrong = std::get_if<std::string>(&fed)) {
        FAIL(*wrong);
    }
    return std::move(std::get<http::request<request_body>>(fed));
}

}  // namespace

TEST_CASE("a body's binary data is read into the block it was given, and any other body as text",
          "[serve][binary]") {
    test_memory memory;
    const std::string json = R"({"inputs": []})";
    const std::string raw = "0123456789abcdefXYZ";
    const std::string head =
        "POST /v2/models/fashion/infer HTTP/1.1\r\nHost: h\r\n"
        "Content-Length: " +
        std::to_string(json.size() + raw.size()) + "\r\n\r\n";
    for (const std::size_t piece : {1, 5, 64}) {
        auto block = memory.block(raw.size());
        const auto* where = block.bytes().data();
        auto req = read_body(head, json + raw, json.size(), block, piece);
        CHECK(req.body().text == json);
        REQUIRE(req.body().binary);
        CHECK(req.body().binary.bytes().data() == where);
        CHECK(as_text(req.body().binary) == raw);
    }
    SECTION("a block of another length than the body leaves it all text") {
        auto req = read_body(head, json + raw, json.size(), memory.block(raw.size() + 1), 7);
        CHECK(req.body().text == json + raw);
        CHECK_FALSE(req.body().binary);
    }
    SECTION("a chunked body is all text") {
        const std::string chunked_head =
            "POST /v2/models/fashion/infer HTTP/1.1\r\nHost: h\r\n"
            "Transfer-Encoding: chunked\r\n\r\n";
        const std::string chunks = "e\r\n" + json + "\r\n13\r\n" + raw + "\r\n0\r\n\r\n";
        auto req = read_body(chunked_head, chunks, json.size(), memory.block(raw.size()), 9);
        CHECK(req.body().text == json + raw);
        CHECK_FALSE(req.body().binary);
    }
}

TEST_CASE("a request's tensors are placed in input memory: viewed where they are there already",
          "[serve][binary]") {
    test_memory memory;
    const float pixels[4] = {0.0f, 0.25f, 0.5f, 1.0f};
    const std::string raw(reinterpret_cast<const char*>(pixels), sizeof pixels);
    const auto model = test::images_model();
    const std::string header =
        R"({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 2, 2],)"
        R"( "parameters": {"binary_data_size": 16}}]})";

    SECTION("binary data read into input memory: the tensor is a view of it") {
        auto binary = memory.block(raw.size());
        std::memcpy(binary.writable_bytes().data(), raw.data(), raw.size());
        auto parsed =
            parse_infer_request(header, model, header.size(), json_reading::fast_when_possible,
                                nullptr, {.memory = memory.memory(), .binary = binary});
        REQUIRE(std::holds_alternative<infer_request>(parsed));
        const auto& in = std::get<infer_request>(parsed).inputs[0];
        CHECK(in.bytes().data() == binary.bytes().data());
        CHECK(in.chars() == raw);
        CHECK(memory.asked == 0);
    }
    SECTION("binary data in the body's text: copied into input memory, once") {
        auto parsed = parse_infer_request(header + raw, model, header.size(),
                                          json_reading::fast_when_possible, nullptr,
                                          {.memory = memory.memory()});
        REQUIRE(std::holds_alternative<infer_request>(parsed));
        const auto& in = std::get<infer_request>(parsed).inputs[0];
        CHECK(memory.holds(in));
        CHECK(in.chars() == raw);
        CHECK(memory.asked == 1);
    }
    SECTION("JSON data: its elements are written into input memory") {
        const std::string body =
            R"({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 2, 2],)"
            R"( "data": [0, 0.25, 0.5, 1]}]})";
        for (const auto reading :
             {json_reading::fast_when_possible, json_reading::streaming_only}) {
            auto parsed = parse_infer_request(body, model, std::nullopt, reading, nullptr,
                                              {.memory = memory.memory()});
            REQUIRE(std::holds_alternative<infer_request>(parsed));
            const auto& in = std::get<infer_request>(parsed).inputs[0];
            CHECK(memory.holds(in));
            CHECK(in.chars() == raw);
        }
    }
    SECTION("input memory that is full: the tensor's own bytes") {
        const input_memory full = [](dtype, std::vector<std::int64_t>) { return tensor(); };
        auto parsed =
            parse_infer_request(header + raw, model, header.size(),
                                json_reading::fast_when_possible, nullptr, {.memory = full});
        REQUIRE(std::holds_alternative<infer_request>(parsed));
        const auto& in = std::get<infer_request>(parsed).inputs[0];
        CHECK_FALSE(in.shared);
        CHECK(in.data == raw);
    }
}

TEST_CASE("binary data at an offset not aligned for a tensor is copied, not viewed",
          "[serve][binary]") {
    test_memory memory;
    const auto model = parse_model_config("pair", "/m.pt", R"({
        "inputs": [{"name": "flags", "datatype": "UINT8", "shape": [-1]},
                   {"name": "x", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}]})",
                                          "pair.json");
    const float x[2] = {1.5f, -2.0f};
    const std::string raw =
        std::string("\1\2\3", 3) + std::string(reinterpret_cast<const char*>(x), 8);
    const std::string header =
        R"({"inputs": [{"name": "flags", "datatype": "UINT8", "shape": [3],)"
        R"( "parameters": {"binary_data_size": 3}},)"
        R"( {"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]})";
    auto binary = memory.block(raw.size());
    std::memcpy(binary.writable_bytes().data(), raw.data(), raw.size());
    auto parsed =
        parse_infer_request(header, model, header.size(), json_reading::fast_when_possible, nullptr,
                            {.memory = memory.memory(), .binary = binary});
    REQUIRE(std::holds_alternative<infer_request>(parsed));
    const auto& inputs = std::get<infer_request>(parsed).inputs;
    CHECK(inputs[0].bytes().data() == binary.bytes().data());  // at 0: a view
    CHECK(inputs[0].chars() == raw.substr(0, 3));
    CHECK(inputs[1].bytes().data() != binary.bytes().data() + 3);  // at 3: a copy
    CHECK(reinterpret_cast<std::uintptr_t>(inputs[1].bytes().data()) % input_alignment == 0);
    CHECK(memory.holds(inputs[1]));
    CHECK(inputs[1].chars() == raw.substr(3));
    // The JSON header's own checks hold as before: more binary data than the inputs take.
    auto extra = memory.block(raw.size() + 1);
    auto wrong = parse_infer_request(header, model, header.size(), json_reading::fast_when_possible,
                                     nullptr, {.memory = memory.memory(), .binary = extra});
    REQUIRE(std::holds_alternative<http_error>(wrong));
    CHECK_THAT(std::get<http_error>(wrong).message,
               Catch::Contains("1 bytes after the JSON header"));
}
