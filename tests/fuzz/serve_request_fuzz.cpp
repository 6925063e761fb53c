// Fuzz target: an infer request's body, as torchpool-serve takes it from a client, through
// the real request path: parsing (JSON, or Triton's binary tensor extension with an
// Inference-Header-Content-Length), batching (stacked with another request, the model's
// outputs split back) and the response writer, under several model configs (every datatype,
// more than one free dimension, an input without a batch dimension).
//
// Input: byte 0 picks the model; byte 1 holds flags (bit 0: a header length follows in bytes
// 2-5, little-endian); the rest is the body.
//
// Two shared-memory regions are registered (Triton's system shared-memory extension): "r"
// (4 KiB of a pattern) and "tiny" (8 bytes), so that inputs can be read from them and outputs
// written into them.
//
// The body is also read as the session reads it (request_body, in pieces of a size bits 1-4
// pick), with its binary data into a block of input memory, and parsed again from there, with
// its tensors placed in input memory, as the server does.
//
// Oracles beyond "no crash, no sanitizer report": the fast JSON path and the streaming one
// agree, and so does the placed one; the body reader gives back the body's bytes exactly; an
// accepted request has tensors whose bytes match their shapes (and BOOL bytes that are 0 or
// 1); every response's JSON part is valid JSON.
#include "../unit/serve/feed_request_body.hpp"
#include "batcher.hpp"
#include "model_config.hpp"
#include "oip.hpp"
#include "request_body.hpp"
#include "shm/arena.hpp"

#include <boost/json.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

using namespace torchpool;
using namespace torchpool::serve;

namespace {

const std::vector<model_config>& models() {
    static const std::vector<model_config> all = [] {
        std::vector<model_config> m;
        m.push_back(parse_model_config("images", "/m/images.pt", R"({
            "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 2, 2]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3],
                         "labels": ["cat", "dog \"quoted\""]},
                        {"name": "label", "datatype": "INT64", "shape": [-1]}]})",
                                       "images.json"));
        m.push_back(parse_model_config("types", "/m/types.pt", R"({
            "inputs": [{"name": "b", "datatype": "BOOL", "shape": [-1, 2]},
                       {"name": "i8", "datatype": "INT8", "shape": [-1, 2]},
                       {"name": "u8", "datatype": "UINT8", "shape": [-1, 2]},
                       {"name": "i16", "datatype": "INT16", "shape": [-1, 2]},
                       {"name": "i32", "datatype": "INT32", "shape": [-1, 2]},
                       {"name": "i64", "datatype": "INT64", "shape": [-1, 2]},
                       {"name": "f64", "datatype": "FP64", "shape": [-1, 2]},
                       {"name": "f16", "datatype": "FP16", "shape": [-1, 2]},
                       {"name": "bf16", "datatype": "BF16", "shape": [-1, 2]}],
            "outputs": [{"name": "ob", "datatype": "BOOL", "shape": [-1]},
                        {"name": "o8", "datatype": "UINT8", "shape": [-1, 2]},
                        {"name": "o64", "datatype": "FP64", "shape": [-1]},
                        {"name": "of16", "datatype": "FP16", "shape": [-1]}]})",
                                       "types.json"));
        m.push_back(parse_model_config("free", "/m/free.pt", R"({
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1, -1]},
                       {"name": "n", "datatype": "INT64", "shape": [-1]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, -1]},
                        {"name": "ok", "datatype": "BOOL", "shape": [-1]}]})",
                                       "free.json"));
        m.push_back(parse_model_config("fixed", "/m/fixed.pt", R"({
            "inputs": [{"name": "v", "datatype": "INT32", "shape": [3]}],
            "outputs": [{"name": "s", "datatype": "FP32", "shape": []}]})",
                                       "fixed.json"));
        return m;
    }();
    return all;
}

void require(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "serve_request_fuzz: %s\n", what);
        std::abort();
    }
}

bool consistent(const tensor& t) {
    const auto count = element_count(t.shape, std::uint64_t{1} << 40);
    return count && t.bytes().size() == *count * element_size(t.type);
}

// What a model would return for `rows` rows: each output of its config, with the batch
// dimension `rows` and any other free dimension 2, filled with bytes from the inputs (so
// that values of every kind, NaN included, reach the writer).
std::vector<tensor> model_outputs(const model_config& model, std::int64_t rows,
                                  const std::vector<tensor>& inputs) {
    std::string source;
    for (const auto& t : inputs) {
        source += t.data;
    }
    std::vector<tensor> out;
    for (const auto& spec : model.outputs) {
        auto shape = spec.shape;
        for (std::size_t d = 0; d < shape.size(); ++d) {
            if (shape[d] == -1) {
                shape[d] = d == 0 ? rows : 2;
            }
        }
        const auto count = element_count(shape, std::uint64_t{1} << 24);
        if (!count) {
            return {};
        }
        std::string data(*count * element_size(spec.type), '\0');
        for (std::size_t i = 0; i < data.size() && !source.empty(); ++i) {
            data[i] = source[i % source.size()];
        }
        if (spec.type == dtype::boolean) {
            for (auto& c : data) {
                c = static_cast<char>(c & 1);  // what LibTorch's bool tensors hold
            }
        }
        out.emplace_back(spec.type, std::move(shape), std::move(data));
    }
    return out;
}

void check_response(const model_config& model, const infer_request& req,
                    const std::vector<tensor>& outputs, std::size_t rows) {
    auto written = infer_response(model, req, outputs, rows);
    if (auto* r = std::get_if<encoded_response>(&written)) {
        const std::string_view json_part =
            r->header_length ? std::string_view(r->body).substr(0, *r->header_length) : r->body;
        boost::system::error_code ec;
        boost::json::parse(json_part, ec);
        require(!ec, "a response's JSON does not parse");
    }
}

// Input memory, as a pool's: 64 MiB.
const std::shared_ptr<shm::arena>& input_arena() {
    static const auto made = [] {
        auto memory = shm::mapping::create("torchpool-fuzz-inputs", std::size_t(64) << 20,
                                           shm::writers::creator_only);
        require(std::holds_alternative<std::shared_ptr<shm::mapping>>(memory), "no input memory");
        return std::make_shared<shm::arena>(std::get<std::shared_ptr<shm::mapping>>(memory));
    }();
    return made;
}

shared_bytes input_block(std::size_t bytes) {
    auto b = input_arena()->allocate(bytes);
    return b ? b->bytes(b) : shared_bytes();
}

tensor placed_input(dtype type, std::vector<std::int64_t> shape) {
    const auto count = element_count(shape, std::uint64_t{1} << 40);
    const std::size_t bytes = count ? *count * element_size(type) : 0;
    auto block = bytes > 0 ? input_block(bytes) : shared_bytes();
    return block ? tensor(type, std::move(shape), std::move(block)) : tensor();
}

// The body read as the session reads it, with the bytes after `text_bytes` into a block of
// input memory, `piece` bytes at a time: the body's text and its binary data.
request_body::value_type read_as_session(std::string_view body, std::size_t text_bytes,
                                         std::size_t piece) {
    const std::string head =
        "POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\n\r\n";
    const bool split = text_bytes < body.size();
    auto fed = test::feed_request_body(
        head, body, text_bytes, split ? input_block(body.size() - text_bytes) : shared_bytes(),
        piece);
    if (const auto* wrong = std::get_if<std::string>(&fed)) {
        require(false, wrong->c_str());
    }
    auto read = std::move(std::get<0>(fed).body());
    std::string whole = read.text;
    whole.append(reinterpret_cast<const char*>(read.binary.bytes().data()), read.binary.size());
    require(whole == body, "the body reader changed the body");
    require(!read.binary || read.text.size() == text_bytes, "the body reader split it elsewhere");
    return read;
}

// The same request parsed from where the session would have read it, its tensors placed in
// input memory, agrees with `parsed`.
void check_placed(std::string_view body, const model_config& model,
                  std::optional<std::size_t> header_length, std::size_t piece,
                  const std::variant<infer_request, http_error>& parsed);

// The regions, over objects unlinked once registered (the registrations keep them).
const shm_regions& regions() {
    static const shm_regions* made = [] {
        auto* r = new shm_regions;
        const auto add = [&](const char* name, std::size_t bytes) {
            const std::string key = "/torchpool-fuzz-" + std::to_string(::getpid()) + "-" + name;
            const int fd = ::shm_open(key.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
            require(fd >= 0 && ::ftruncate(fd, static_cast<off_t>(bytes)) == 0,
                    "cannot make a shared-memory object");
            std::string pattern(bytes, '\0');
            for (std::size_t i = 0; i < bytes; ++i) {
                pattern[i] = static_cast<char>(i % 2 == 0 ? 0 : 0x3f);  // small floats, 0s and 1s
            }
            require(::pwrite(fd, pattern.data(), bytes, 0) == static_cast<ssize_t>(bytes),
                    "cannot fill a shared-memory object");
            require(!r->add(name, key, 0, bytes), "cannot register a region");
            ::shm_unlink(key.c_str());
            ::close(fd);
        };
        add("r", 4096);
        add("tiny", 8);
        return r;
    }();
    return *made;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) {
        return 0;
    }
    const auto& model = models()[data[0] % models().size()];
    const std::uint8_t flags = data[1];
    std::string_view rest(reinterpret_cast<const char*>(data) + 2, size - 2);
    std::optional<std::size_t> header_length;
    if ((flags & 1) != 0) {
        if (rest.size() < 4) {
            return 0;
        }
        std::uint32_t n;
        std::memcpy(&n, rest.data(), 4);
        header_length = n;
        rest.remove_prefix(4);
    }
    auto parsed = parse_infer_request(rest, model, header_length, json_reading::fast_when_possible,
                                      &regions());
    auto streamed =
        parse_infer_request(rest, model, header_length, json_reading::streaming_only, &regions());
    require(parsed.index() == streamed.index(), "the fast and streaming paths disagree");
    check_placed(rest, model, header_length, 1 + ((flags >> 1) & 15) * 97, parsed);
    auto* req = std::get_if<infer_request>(&parsed);
    if (!req) {
        const auto& e = std::get<http_error>(parsed);
        require(e.status >= 400 && e.status < 500, "a bad request is not answered 4xx");
        require(!e.message.empty(), "an error without words");
        boost::system::error_code ec;
        boost::json::parse(error_json(e.message), ec);
        require(!ec, "an error's JSON does not parse");
        return 0;
    }
    const auto& other = std::get<infer_request>(streamed);
    require(req->inputs.size() == other.inputs.size(), "the paths read different inputs");
    for (std::size_t i = 0; i < req->inputs.size(); ++i) {
        require(req->inputs[i].shape == other.inputs[i].shape &&
                    req->inputs[i].data == other.inputs[i].data,
                "the paths read different tensors");
        require(consistent(req->inputs[i]), "an accepted input's bytes do not match its shape");
        require(req->inputs[i].type != dtype::boolean ||
                    req->inputs[i].data.find_first_not_of(std::string_view("\0\1", 2)) ==
                        std::string::npos,
                "an accepted BOOL input holds a byte other than 0 or 1");
    }
    // Alone: the model's outputs for its rows.
    const auto rows = rows_of(req->inputs);
    check_response(model, *req, model_outputs(model, rows, req->inputs),
                   static_cast<std::size_t>(rows));
    // Batched with a copy of itself, as the batcher would (the server batches only models
    // whose tensors all keep a free first dimension): stacked, run, split back.
    if (keeps_batch_dimension(model) && batchable(req->inputs) &&
        stackable(req->inputs, req->inputs)) {
        const auto stacked = stack({&req->inputs, &req->inputs});
        require(rows_of(stacked) == 2 * rows, "stacking lost rows");
        for (const auto& t : stacked) {
            require(consistent(t), "a stacked input's bytes do not match its shape");
        }
        const auto outputs = model_outputs(model, 2 * rows, stacked);
        const auto parts = split(outputs, {rows, rows});
        require(outputs.empty() || parts.size() == 2, "a batch that kept its rows did not split");
        for (const auto& part : parts) {
            for (const auto& t : part) {
                require(consistent(t), "a split output's bytes do not match its shape");
            }
            check_response(model, *req, part, static_cast<std::size_t>(2 * rows));
        }
    }
    return 0;
}

namespace {

void check_placed(std::string_view body, const model_config& model,
                  std::optional<std::size_t> header_length, std::size_t piece,
                  const std::variant<infer_request, http_error>& parsed) {
    const bool split = header_length && *header_length <= body.size();
    const auto read = read_as_session(body, split ? *header_length : body.size(), piece);
    auto placed =
        parse_infer_request(read.text, model, header_length, json_reading::fast_when_possible,
                            &regions(), {.memory = placed_input, .binary = read.binary});
    require(placed.index() == parsed.index(), "placing the tensors changed the answer");
    if (const auto* e = std::get_if<http_error>(&parsed)) {
        require(std::get<http_error>(placed).message == e->message,
                "placing the tensors changed the error");
        return;
    }
    const auto& a = std::get<infer_request>(parsed).inputs;
    const auto& b = std::get<infer_request>(placed).inputs;
    require(a.size() == b.size(), "placing the tensors changed the inputs");
    for (std::size_t i = 0; i < a.size(); ++i) {
        require(a[i].type == b[i].type && a[i].shape == b[i].shape && a[i].chars() == b[i].chars(),
                "placing the tensors changed a tensor");
    }
}

}  // namespace
