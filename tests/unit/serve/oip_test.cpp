// The inference server's Open Inference Protocol: every bad input gets a specific error, and
// good ones become exactly the tensors the model wants; and how batches are stacked and split.
#include "oip.hpp"

#include "batcher.hpp"
#include "images_model.hpp"
#include "model_config.hpp"

#include <boost/json.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>

using namespace torchpool;
using namespace torchpool::serve;

namespace {

using test::images_model;

// The error of parsing `body`, or "" if it parsed.
std::string error_of(std::string_view body, unsigned* status = nullptr) {
    auto parsed = parse_infer_request(body, images_model());
    if (auto* e = std::get_if<http_error>(&parsed)) {
        if (status) {
            *status = e->status;
        }
        return e->message;
    }
    return "";
}

}  // namespace

TEST_CASE("an infer request becomes the model's input tensors, flat or nested", "[serve]") {
    for (const char* data : {"[0, 0.5, 1, 2]", "[[[[0, 0.5], [1, 2]]]]"}) {
        const std::string body =
            std::string(R"({"id": "r1", "inputs": [{"name": "images", "datatype": "FP32",)") +
            R"( "shape": [1, 1, 2, 2], "data": )" + data + "}]}";
        auto parsed = parse_infer_request(body, images_model());
        REQUIRE(std::holds_alternative<infer_request>(parsed));
        const auto& req = std::get<infer_request>(parsed);
        CHECK(req.id == "r1");
        REQUIRE(req.inputs.size() == 1);
        CHECK(req.inputs[0].type == dtype::float32);
        CHECK(req.inputs[0].shape == std::vector<std::int64_t>{1, 1, 2, 2});
        float values[4];
        REQUIRE(req.inputs[0].data.size() == sizeof values);
        std::memcpy(values, req.inputs[0].data.data(), sizeof values);
        CHECK(values[1] == 0.5f);
        CHECK(values[3] == 2.0f);
    }
}

TEST_CASE("the streaming parser finds each input's data wherever the keys put it", "[serve]") {
    const auto first_value = [](const std::string& body) {
        auto parsed = parse_infer_request(body, images_model());
        REQUIRE(std::holds_alternative<infer_request>(parsed));
        const auto& req = std::get<infer_request>(parsed);
        REQUIRE(req.inputs.size() == 1);
        float values[4];
        REQUIRE(req.inputs[0].data.size() == sizeof values);
        std::memcpy(values, req.inputs[0].data.data(), sizeof values);
        return values[0];
    };
    // Data before the datatype and shape, an escaped key, and "data" keys elsewhere (in
    // parameters, in outputs, and in an input's parameters) that are not the input's data.
    CHECK(first_value(R"({"inputs": [{"data": [7, 0, 0, 0], "name": "images",
                          "shape": [1,1,2,2], "datatype": "FP32"}]})") == 7.0f);
    CHECK(first_value(R"({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1,1,2,2],
                          "d\u0061ta": [6, 0, 0, 0]}]})") == 6.0f);
    CHECK(first_value(R"({"parameters": {"data": [1], "inputs": [{"data": [9]}]},
                          "inputs": [{"name": "images", "datatype": "FP32", "shape": [1,1,2,2],
                          "parameters": {"data": [5, 5]}, "data": [[3, 0], [0, 0]]}],
                          "outputs": [{"name": "logits", "data": [1, 2]}]})") == 3.0f);
    // Two inputs' data in one document keep apart.
    auto two = parse_infer_request(
        R"({"inputs": [{"name": "a", "datatype": "INT64", "shape": [2], "data": [1, 2]},
                       {"name": "b", "datatype": "BOOL", "shape": [3], "data": [true, false, true]}]})",
        parse_model_config("two", "/m.pt", R"({"inputs": [{"name": "a", "datatype": "INT64",
            "shape": [2]}, {"name": "b", "datatype": "BOOL", "shape": [3]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}]})",
                           "two.json"));
    REQUIRE(std::holds_alternative<infer_request>(two));
    const auto& inputs = std::get<infer_request>(two).inputs;
    REQUIRE(inputs.size() == 2);
    CHECK(inputs[0].data.size() == 2 * sizeof(std::int64_t));
    CHECK(inputs[1].data == std::string("\1\0\1", 3));
    // Things that are not numbers among the numbers are counted, and named.
    const std::string with_object =
        R"({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1,1,2,2],
            "data": [1, {"x": [2, 3], "y": {}}, 4, 5]}]})";
    CHECK_THAT(error_of(with_object),
               Catch::Contains("element 1 of input 'images' is not a number"));
    CHECK_THAT(error_of(R"({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1,1,2,2],
                           "data": [1, 2, null, "4"]}]})"),
               Catch::Contains("element 2 of input 'images' is not a number"));
    CHECK_THAT(error_of(R"({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1,1,2,2],
                           "data": 1}]})"),
               Catch::Contains("holds 4 elements, but its data has 1"));
    CHECK_THAT(error_of(R"({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1,1,2,2],
                           "data": [1, 2, 3, 4]}]} trailing)"),
               Catch::Contains("not valid JSON"));
}

TEST_CASE("every bad infer request gets an error that names the problem", "[serve]") {
    const auto with = [](std::string input) { return R"({"inputs": [)" + input + "]}"; };
    CHECK_THAT(error_of("{not json"), Catch::Contains("not valid JSON"));
    CHECK_THAT(error_of("[1, 2]"), Catch::Contains("JSON object"));
    CHECK_THAT(error_of("{}"), Catch::Contains("\"inputs\""));
    CHECK_THAT(error_of(R"({"id": 7, "inputs": []})"), Catch::Contains("\"id\" must be text"));
    CHECK_THAT(error_of(with(R"({"name": "pixels", "datatype": "FP32", "shape": [1,1,2,2],
                                 "data": [1,2,3,4]})")),
               Catch::Contains("no input named 'pixels'; its inputs: images"));
    CHECK_THAT(error_of(with(R"({"name": "images", "datatype": "INT64", "shape": [1,1,2,2],
                                 "data": [1,2,3,4]})")),
               Catch::Contains("has datatype INT64, but model 'fashion' wants FP32"));
    CHECK_THAT(error_of(with(R"({"name": "images", "datatype": "BYTES", "shape": [1,1,2,2],
                                 "data": [1,2,3,4]})")),
               Catch::Contains("does not know"));
    CHECK_THAT(error_of(with(R"({"name": "images", "datatype": "FP32", "shape": [1,2,2],
                                 "data": [1,2,3,4]})")),
               Catch::Contains("has shape [1, 2, 2], but model 'fashion' wants [-1, 1, 2, 2]"));
    CHECK_THAT(error_of(with(R"({"name": "images", "datatype": "FP32", "shape": [2,1,2,2],
                                 "data": [1,2,3,4]})")),
               Catch::Contains("holds 8 elements, but its data has 4"));
    CHECK_THAT(error_of(with(R"({"name": "images", "datatype": "FP32", "shape": [1,1,2,2],
                                 "data": [1,"two",3,4]})")),
               Catch::Contains("element 1 of input 'images' is not a number"));
    CHECK_THAT(error_of(with(R"({"name": "images", "datatype": "FP32", "shape": [1,1,2,-2],
                                 "data": []})")),
               Catch::Contains("sizes >= 0"));
    CHECK_THAT(error_of(with(R"({"name": "images", "shape": [1,1,2,2], "data": [1,2,3,4]})")),
               Catch::Contains("needs \"datatype\", \"shape\" and \"data\""));
    const std::string one = R"({"name": "images", "datatype": "FP32", "shape": [1,1,2,2],
                                "data": [1,2,3,4]})";
    CHECK_THAT(error_of(with(one + "," + one)), Catch::Contains("given twice"));
    CHECK_THAT(error_of(R"({"inputs": [)" + one + R"(], "outputs": [{"name": "probs"}]})"),
               Catch::Contains("no output named 'probs'"));
    unsigned status = 0;
    CHECK_THAT(error_of(with(R"({"name": "images", "datatype": "FP32",
                                 "shape": [100000,1,2000,2000], "data": []})"),
                        &status),
               Catch::Contains("too large"));
    CHECK(status == 413);
}

TEST_CASE("a response carries the outputs asked for, and echoes the id", "[serve]") {
    const auto model = images_model();
    tensor logits(dtype::float32, {1, 3});
    const float l[3] = {0.25f, -1.0f, 2.0f};
    logits.data.assign(reinterpret_cast<const char*>(l), sizeof l);
    tensor label(dtype::int64, {1});
    const std::int64_t k = 2;
    label.data.assign(reinterpret_cast<const char*>(&k), sizeof k);

    infer_request all{.id = "abc"};
    auto text = std::get<encoded_response>(infer_response(model, all, {logits, label})).body;
    auto v = boost::json::parse(text).as_object();
    CHECK(v["id"] == "abc");
    CHECK(v["model_name"] == "fashion");
    auto& outputs = v["outputs"].as_array();
    REQUIRE(outputs.size() == 2);
    CHECK(outputs[0].as_object()["name"] == "logits");
    CHECK(outputs[0].as_object()["data"].as_array()[2].as_double() == 2.0);
    CHECK(outputs[1].as_object()["datatype"] == "INT64");
    CHECK(outputs[1].as_object()["data"].as_array()[0].as_int64() == 2);

    infer_request some{.outputs = {"label"}};
    v = boost::json::parse(
            std::get<encoded_response>(infer_response(model, some, {logits, label})).body)
            .as_object();
    CHECK(v["outputs"].as_array().size() == 1);
    CHECK_FALSE(v.contains("id"));

    // An empty id given is an id: echoed (the protocol: "if specified ... must be returned").
    auto parsed = parse_infer_request(
        R"({"id": "", "inputs": [{"name": "images", "datatype": "FP32", "shape": [1,1,2,2],
            "data": [1,2,3,4]}]})",
        model);
    REQUIRE(std::holds_alternative<infer_request>(parsed));
    v = boost::json::parse(
            std::get<encoded_response>(
                infer_response(model, std::get<infer_request>(parsed), {logits, label}))
                .body)
            .as_object();
    REQUIRE(v.contains("id"));
    CHECK(v["id"] == "");

    auto wrong = infer_response(model, all, {logits});
    REQUIRE(std::holds_alternative<http_error>(wrong));
    CHECK(std::get<http_error>(wrong).status == 500);
    CHECK_THAT(std::get<http_error>(wrong).message, Catch::Contains("returned 1 tensors"));
}

TEST_CASE("a response's text is valid JSON whatever the values and the id", "[serve]") {
    const auto model = parse_model_config("m", "/m.pt", R"({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]},
                    {"name": "flags", "datatype": "BOOL", "shape": [-1]},
                    {"name": "small", "datatype": "INT8", "shape": [-1]}]})",
                                          "m.json");
    const float values[] = {0.1f,      -3.4028235e38f, 1e-45f,
                            2.0f,      std::nanf(""),  std::numeric_limits<float>::infinity(),
                            123456.79f};
    tensor y(dtype::float32, {7});
    y.data.assign(reinterpret_cast<const char*>(values), sizeof values);
    tensor flags(dtype::boolean, {2});
    flags.data = std::string("\1\0", 2);
    tensor small(dtype::int8, {2});
    small.data = std::string("\x80\x7f", 2);
    infer_request req{.id = "quote \" backslash \\ tab \t nul " + std::string(1, '\0') + " é"};
    const auto text =
        std::get<encoded_response>(infer_response(model, req, {y, flags, small})).body;
    auto v = boost::json::parse(text).as_object();
    CHECK(v["id"].as_string() == *req.id);
    auto& outputs = v["outputs"].as_array();
    auto& data = outputs[0].as_object()["data"].as_array();
    REQUIRE(data.size() == 7);
    for (const std::size_t i : {0u, 1u, 2u, 3u, 6u}) {
        INFO("element " << i << ": " << data[i]);
        CHECK(data[i].is_double());  // 2.0 stays a float in the text
        CHECK(static_cast<float>(data[i].as_double()) == values[i]);  // exact, as float32
    }
    CHECK(data[4].is_null());  // NaN
    CHECK(data[5].as_double() == std::numeric_limits<double>::infinity());
    CHECK(outputs[1].as_object()["data"] == boost::json::parse("[true, false]"));
    CHECK(outputs[2].as_object()["data"] == boost::json::parse("[-128, 127]"));
}

TEST_CASE("a model config that cannot work is refused, naming the file and the problem",
          "[serve]") {
    const auto refused = [](std::string_view json) -> std::string {
        try {
            parse_model_config("m", "m.pt", json, "m.json");
        } catch (const std::runtime_error& e) {
            return e.what();
        }
        return "accepted";
    };
    CHECK_THAT(refused("{"), Catch::Contains("m.json is not valid JSON"));
    CHECK_THAT(refused(R"({"inputs": []})"), Catch::Contains("\"inputs\" must list"));
    CHECK_THAT(refused(R"({"inputs": [{"name": "x", "datatype": "FP99", "shape": [1]}],
                           "outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}]})"),
               Catch::Contains("unknown datatype \"FP99\""));
    CHECK_THAT(refused(R"({"inputs": [{"name": "x", "datatype": "FP32", "shape": [0]}],
                           "outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}]})"),
               Catch::Contains("positive sizes or -1"));
    CHECK(refused(R"({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
                      "outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}]})") ==
          "accepted");
    CHECK_THAT(refused(R"({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]},
                                      {"name": "x", "datatype": "INT64", "shape": [-1]}],
                           "outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}]})"),
               Catch::Contains("two inputs are named 'x'"));
    CHECK_THAT(refused(R"({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
                           "outputs": [{"name": "y", "datatype": "FP32", "shape": [1],
                                        "labels": ["a", 2]}]})"),
               Catch::Contains("the labels of y must be a list of class names"));
    CHECK_THROWS_WITH(load_model_config("m", "/nonexistent/m.pt"),
                      Catch::Contains("cannot read /nonexistent/m.json"));
}

TEST_CASE("model metadata lists the config's tensors", "[serve]") {
    auto v = boost::json::parse(model_metadata_json(images_model())).as_object();
    CHECK(v["name"] == "fashion");
    CHECK(v["inputs"].as_array()[0].as_object()["datatype"] == "FP32");
    CHECK(v["inputs"].as_array()[0].as_object()["shape"].as_array()[0].as_int64() == -1);
    CHECK(v["outputs"].as_array().size() == 2);
    CHECK(boost::json::parse(error_json("bad \"x\"")).as_object()["error"] == "bad \"x\"");
}

TEST_CASE("requests are stacked along the batch dimension and split back", "[serve][batch]") {
    const auto images = [](std::int64_t rows, char fill) {
        return std::vector<tensor>{
            tensor(dtype::float32, {rows, 1, 2, 2}, std::string(rows * 16, fill))};
    };
    const auto a = images(1, 'a');
    const auto b = images(3, 'b');
    CHECK(rows_of(a) == 1);
    CHECK(rows_of(b) == 3);
    CHECK(stackable(a, b));
    CHECK_FALSE(stackable(a, {tensor(dtype::float32, {1, 2, 2, 1}, std::string(16, 'c'))}));
    CHECK_FALSE(stackable(a, {tensor(dtype::float64, {1, 1, 2, 2}, std::string(32, 'c'))}));

    const auto stacked = stack({&a, &b});
    REQUIRE(stacked.size() == 1);
    CHECK(stacked[0].shape == std::vector<std::int64_t>{4, 1, 2, 2});
    CHECK(stacked[0].data == std::string(16, 'a') + std::string(48, 'b'));

    // The model's output for the 4 rows: 3 values each; split back 1 and 3 rows.
    const tensor out(dtype::int32, {4, 3}, std::string(12, '1') + std::string(36, '2'));
    auto parts = split({out}, {1, 3});
    REQUIRE(parts.size() == 2);
    CHECK(parts[0][0].shape == std::vector<std::int64_t>{1, 3});
    CHECK(parts[0][0].data == std::string(12, '1'));
    CHECK(parts[1][0].shape == std::vector<std::int64_t>{3, 3});
    CHECK(parts[1][0].data == std::string(36, '2'));
    // An output that lost the batch dimension cannot be split.
    CHECK(split({tensor(dtype::int32, {3}, std::string(12, '1'))}, {1, 3}).empty());
}

TEST_CASE("an output's binary_data: false overrides binary_data_output: true", "[serve]") {
    const auto model = images_model();
    auto parsed = parse_infer_request(
        R"({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1,1,2,2],
            "data": [1,2,3,4]}],
            "outputs": [{"name": "logits", "parameters": {"binary_data": false}}, {"name": "label"}],
            "parameters": {"binary_data_output": true}})",
        model);
    REQUIRE(std::holds_alternative<infer_request>(parsed));
    tensor logits(dtype::float32, {1, 3}, std::string(12, '\0'));
    tensor label(dtype::int64, {1}, std::string(8, '\0'));
    const auto out = std::get<encoded_response>(
        infer_response(model, std::get<infer_request>(parsed), {logits, label}));
    REQUIRE(out.header_length);
    auto v = boost::json::parse(out.body.substr(0, *out.header_length)).as_object();
    auto& outputs = v["outputs"].as_array();
    CHECK(outputs[0].as_object().contains("data"));  // logits as JSON
    CHECK(outputs[1].as_object()["parameters"].as_object()["binary_data_size"] == 8);
    CHECK(out.body.size() == *out.header_length + 8);  // label alone as binary
    // And a binary_data that is not true or false is refused.
    auto bad = parse_infer_request(
        R"({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1,1,2,2],
            "data": [1,2,3,4]}], "outputs": [{"name": "label", "parameters": {"binary_data": 1}}]})",
        model);
    REQUIRE(std::holds_alternative<http_error>(bad));
    CHECK_THAT(std::get<http_error>(bad).message, Catch::Contains("must be true or false"));
}

TEST_CASE("server metadata lists the binary tensor extension, and model readiness names the model",
          "[serve]") {
    auto v = boost::json::parse(server_metadata_json()).as_object();
    CHECK(v["extensions"].as_array() == boost::json::array{"binary_tensor_data", "classification"});
    CHECK(boost::json::parse(server_metadata_json(true)).at("extensions").as_array().back() ==
          "system_shared_memory");
    v = boost::json::parse(model_ready_json(images_model(), true)).as_object();
    CHECK(v["name"] == "fashion");
    CHECK(v["ready"] == true);
}

TEST_CASE("a request may ask for a fault to be injected, by name", "[serve]") {
    const auto body = [](std::string kind) {
        return R"({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1,1,2,2],
                   "data": [1,2,3,4]}], "parameters": {"torchpool_fault": ")" +
               kind + R"("}})";
    };
    auto parsed = parse_infer_request(body("crash"), images_model());
    REQUIRE(std::holds_alternative<infer_request>(parsed));
    CHECK(std::get<infer_request>(parsed).inject == fault::crash(11));
    CHECK_THAT(error_of(body("explode")), Catch::Contains("must be one of crash, exit"));
}

TEST_CASE(
    "Triton's binary tensor extension: raw input bytes after the JSON header, and "
    "binary outputs on request",
    "[serve][binary]") {
    const auto model = images_model();
    const float pixels[4] = {0.0f, 0.25f, 0.5f, 1.0f};
    const std::string raw(reinterpret_cast<const char*>(pixels), sizeof pixels);
    const std::string header =
        R"({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 2, 2],)"
        R"( "parameters": {"binary_data_size": 16}}],)"
        R"( "outputs": [{"name": "logits", "parameters": {"binary_data": true}},)"
        R"( {"name": "label"}]})";
    auto parsed = parse_infer_request(header + raw, model, header.size());
    REQUIRE(std::holds_alternative<infer_request>(parsed));
    const auto& req = std::get<infer_request>(parsed);
    CHECK(req.inputs[0].data == raw);
    CHECK(req.binary_output_names == std::vector<std::string>{"logits"});

    // The response: JSON first (its length is the header to send), then logits' raw bytes;
    // the label output, not asked as binary, stays JSON.
    tensor logits(dtype::float32, {1, 3}, std::string(12, 'L'));
    const std::int64_t k = 1;
    tensor label(dtype::int64, {1}, std::string(reinterpret_cast<const char*>(&k), 8));
    auto out = std::get<encoded_response>(infer_response(model, req, {logits, label}));
    REQUIRE(out.header_length);
    CHECK(out.body.substr(*out.header_length) == std::string(12, 'L'));
    auto v = boost::json::parse(out.body.substr(0, *out.header_length)).as_object();
    auto& first = v["outputs"].as_array()[0].as_object();
    CHECK(first["parameters"].as_object()["binary_data_size"].as_int64() == 12);
    CHECK_FALSE(first.contains("data"));
    REQUIRE(v["outputs"].as_array().size() == 2);
    CHECK(v["outputs"].as_array()[1].as_object()["data"].as_array()[0].as_int64() == 1);

    // From 64 KiB of binary outputs in all, every one of them is written from where it is,
    // in order, after the JSON: attached, not copied into the body.
    tensor many(dtype::float32, {4096, 3}, std::string(4096 * 3 * 4, 'M'));
    tensor labels(dtype::int64, {4096}, std::string(4096 * 8, 'K'));
    auto all_binary = req;
    all_binary.binary_outputs = true;
    auto big = std::get<encoded_response>(infer_response(model, all_binary, {many, labels}));
    REQUIRE(big.header_length);
    CHECK(big.body.size() == *big.header_length);
    REQUIRE(big.attachments.size() == 2);
    CHECK(big.attachments[0].chars() == many.chars());
    CHECK(big.attachments[1].chars() == labels.chars());

    // What can go wrong, each said.
    const auto problem = [&](std::string body, std::optional<std::size_t> length) {
        auto p = parse_infer_request(body, model, length);
        return std::holds_alternative<http_error>(p) ? std::get<http_error>(p).message
                                                     : std::string("accepted");
    };
    CHECK_THAT(problem(header + raw, header.size() + 100), Catch::Contains("has only"));
    CHECK_THAT(problem(header + raw.substr(0, 8), header.size()),
               Catch::Contains("announces 16 bytes of binary data, but 8 remain"));
    CHECK_THAT(problem(header + raw + "xx", header.size()),
               Catch::Contains("2 bytes after the JSON header belong to no input"));
    CHECK_THAT(problem(header, std::nullopt),
               Catch::Contains("no Inference-Header-Content-Length"));
    std::string wrong = header;
    wrong.replace(wrong.find("16"), 2, "12");
    CHECK_THAT(problem(wrong + raw.substr(0, 12), wrong.size()),
               Catch::Contains("takes 16 bytes, but its binary data has 12"));
}

TEST_CASE("a shape's element count is checked before each multiplication", "[serve]") {
    CHECK(element_count({}) == 1u);
    CHECK(element_count({2, 3, 4}) == 24u);
    CHECK(element_count({0, std::int64_t{1} << 62}) == 0u);  // empty, however large the rest
    CHECK(element_count({std::int64_t{1} << 62, 0}) == 0u);
    CHECK(element_count({1 << 14, 1 << 14}) == std::uint64_t{1} << 28);
    CHECK_FALSE(element_count({1 << 14, (1 << 14) + 1}));
    // 2^28 * 2^36 is 2^64: it wrapped to 0 elements and passed every check.
    CHECK_FALSE(element_count({std::int64_t{1} << 28, std::int64_t{1} << 36}));
    CHECK_FALSE(element_count({std::int64_t{1} << 32, std::int64_t{1} << 32}));

    unsigned status = 0;
    const auto model = parse_model_config("wide", "/m.pt", R"({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}]})",
                                          "wide.json");
    auto parsed = parse_infer_request(
        R"({"inputs": [{"name": "x", "datatype": "FP32", "shape": [268435456, 68719476736],
            "data": []}]})",
        model);
    REQUIRE(std::holds_alternative<http_error>(parsed));
    status = std::get<http_error>(parsed).status;
    CHECK(status == 413);
    CHECK_THAT(std::get<http_error>(parsed).message, Catch::Contains("more than 268435456"));
}

TEST_CASE("a BOOL input takes true and false only, and no other element", "[serve]") {
    const auto model = parse_model_config("flags", "/m.pt", R"({
        "inputs": [{"name": "f", "datatype": "BOOL", "shape": [-1]}],
        "outputs": [{"name": "y", "datatype": "BOOL", "shape": [-1]}]})",
                                          "flags.json");
    const auto body = [](const char* data) {
        return std::string(R"({"inputs": [{"name": "f", "datatype": "BOOL", "shape": [3],)") +
               R"( "data": )" + data + "}]}";
    };
    auto good = parse_infer_request(body("[true, false, true]"), model);
    REQUIRE(std::holds_alternative<infer_request>(good));
    CHECK(std::get<infer_request>(good).inputs[0].data == std::string("\1\0\1", 3));
    // As binary data, each element is one byte, 0 or 1.
    const std::string header = R"({"inputs": [{"name": "f", "datatype": "BOOL", "shape": [3],)"
                               R"( "parameters": {"binary_data_size": 3}}]})";
    auto binary = parse_infer_request(header + std::string("\1\0\1", 3), model, header.size());
    REQUIRE(std::holds_alternative<infer_request>(binary));
    auto two = parse_infer_request(header + std::string("\1\2\1", 3), model, header.size());
    REQUIRE(std::holds_alternative<http_error>(two));
    CHECK(std::get<http_error>(two).message ==
          "element 1 of input 'f' (BOOL binary data) is byte 2, not 0 or 1");
    // Numbers are not booleans (reading one through the union's bool was undefined behaviour).
    for (const char* data : {"[true, 1, false]", "[0, 0, 0]", "[true, 2.5, false]"}) {
        auto bad = parse_infer_request(body(data), model);
        REQUIRE(std::holds_alternative<http_error>(bad));
        CHECK_THAT(std::get<http_error>(bad).message, Catch::Contains("is not true or false"));
    }
}

TEST_CASE("a request of 0 rows, or whose inputs disagree on rows, is never stacked",
          "[serve][batch]") {
    const auto rows = [](std::int64_t n) {
        return std::vector<tensor>{tensor(dtype::float32, {n, 2}, std::string(n * 8, 'x'))};
    };
    CHECK(batchable(rows(1)));
    CHECK(batchable(rows(5)));
    CHECK_FALSE(batchable(rows(0)));
    CHECK_FALSE(batchable({}));
    CHECK_FALSE(batchable({tensor(dtype::float32, {}, std::string(4, 'x'))}));  // a scalar
    CHECK_FALSE(batchable({tensor(dtype::float32, {2, 1}, std::string(8, 'x')),
                           tensor(dtype::float32, {3, 1}, std::string(12, 'x'))}));
    CHECK(batchable({tensor(dtype::float32, {2, 1}, std::string(8, 'x')),
                     tensor(dtype::int64, {2}, std::string(16, 'x'))}));

    // Split has nothing to divide by with 0 rows in all (it divided by zero: SIGFPE).
    CHECK(split({tensor(dtype::float32, {0, 10}, "")}, {0, 0}).empty());
    CHECK(split({tensor(dtype::float32, {0, 10}, "")}, {}).empty());
    // An output whose bytes do not divide into its rows is not split.
    CHECK(split({tensor(dtype::float32, {2, 1}, std::string(7, 'x'))}, {1, 1}).empty());
}

TEST_CASE("only a model whose tensors all have a free first dimension is batched", "[serve]") {
    const auto config = [](const char* in, const char* out) {
        return parse_model_config("m", "/m.pt",
                                  std::string(R"({"inputs": [{"name": "x", "datatype": "FP32",)") +
                                      R"( "shape": )" + in +
                                      R"(}], "outputs": [{"name": "y", "datatype": "FP32",)" +
                                      R"( "shape": )" + out + "}]}",
                                  "m.json");
    };
    CHECK(keeps_batch_dimension(images_model()));
    CHECK(keeps_batch_dimension(config("[-1, 3]", "[-1]")));
    CHECK_FALSE(keeps_batch_dimension(config("[3]", "[-1]")));    // stacking two makes [6]
    CHECK_FALSE(keeps_batch_dimension(config("[-1, 3]", "[]")));  // nothing to split
    CHECK_FALSE(keeps_batch_dimension(config("[]", "[-1]")));
    CHECK_FALSE(keeps_batch_dimension(config("[-1]", "[2, -1]")));
}

TEST_CASE("an output asked as a classification gives its top k classes by name", "[serve]") {
    auto model = parse_model_config("fashion", "/m.pt", R"({
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 2, 2]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3],
                     "labels": ["cat", "dog", "eel"]},
                    {"name": "label", "datatype": "INT64", "shape": [-1]}]})",
                                    "m.json");
    REQUIRE(model.outputs[0].labels == std::vector<std::string>{"cat", "dog", "eel"});
    const auto request = [&](const char* k) {
        auto parsed =
            parse_infer_request(std::string(R"({"inputs": [{"name": "images", "datatype": "FP32",
                "shape": [2,1,2,2], "data": [1,2,3,4,5,6,7,8]}],
                "outputs": [{"name": "logits", "parameters": {"classification": )") +
                                    k + "}}]}",
                                model);
        return parsed;
    };
    const float l[6] = {0.5f, 2.25f, -1.0f, 3.0f, 3.0f, 1.0f};  // row 1 ties: the lower first
    tensor logits(dtype::float32, {2, 3}, std::string(reinterpret_cast<const char*>(l), sizeof l));
    tensor label(dtype::int64, {2}, std::string(16, '\0'));
    auto parsed = request("2");
    REQUIRE(std::holds_alternative<infer_request>(parsed));
    auto v = boost::json::parse(
                 std::get<encoded_response>(
                     infer_response(model, std::get<infer_request>(parsed), {logits, label}))
                     .body)
                 .as_object();
    auto& out = v["outputs"].as_array();
    REQUIRE(out.size() == 1);
    CHECK(out[0].as_object()["datatype"] == "BYTES");
    CHECK(out[0].as_object()["shape"] == boost::json::array{2, 2});
    CHECK(out[0].as_object()["data"] ==
          boost::json::array{"2.25:1:dog", "0.5:0:cat", "3.0:0:cat", "3.0:1:dog"});
    // k past the classes gives them all; a k that is not a whole number >= 1 is refused.
    parsed = request("7");
    v = boost::json::parse(
            std::get<encoded_response>(
                infer_response(model, std::get<infer_request>(parsed), {logits, label}))
                .body)
            .as_object();
    CHECK(v["outputs"].as_array()[0].as_object()["shape"] == boost::json::array{2, 3});
    for (const char* bad : {"0", "-1", "1.5", "\"2\""}) {
        auto refused = request(bad);
        REQUIRE(std::holds_alternative<http_error>(refused));
        CHECK_THAT(std::get<http_error>(refused).message,
                   Catch::Contains("must be a whole number of classes >= 1"));
    }
    // An output without labels gives score:index; one of rank 1 is one row.
    infer_request of_label{.outputs = {"label"}, .classifications = {{"label", 1}}};
    tensor ranks(dtype::int64, {2}, std::string(16, '\0'));
    const std::int64_t two[2] = {4, 9};
    ranks.data.assign(reinterpret_cast<const char*>(two), sizeof two);
    v = boost::json::parse(
            std::get<encoded_response>(infer_response(model, of_label, {logits, ranks})).body)
            .as_object();
    CHECK(v["outputs"].as_array()[0].as_object()["shape"] == boost::json::array{1});
    CHECK(v["outputs"].as_array()[0].as_object()["data"] == boost::json::array{"9:1"});
    // A tensor of more than two dimensions cannot be classified: a 400 that says why.
    tensor cube(dtype::float32, {1, 1, 3}, std::string(12, '\0'));
    infer_request of_cube{.outputs = {"logits"}, .classifications = {{"logits", 1}}};
    auto refused = infer_response(model, of_cube, {cube, label});
    REQUIRE(std::holds_alternative<http_error>(refused));
    CHECK(std::get<http_error>(refused).status == 400);
    CHECK_THAT(std::get<http_error>(refused).message,
               Catch::Contains("a classification needs [classes] or [batch, classes]"));
}
