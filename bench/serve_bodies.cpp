// Writes the binary request body of bench/serve_load.sh: the model's sample request (JSON
// tensors) as Triton's binary tensor extension has it, a JSON header followed by the raw
// float32 bytes; prints the header's length (Inference-Header-Content-Length).
//
// Usage: torchpool-bench-serve-bodies SAMPLE.json OUT
#include <boost/json.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace json = boost::json;

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s SAMPLE.json OUT\n", argv[0]);
        return 64;
    }
    std::stringstream text;
    text << std::ifstream(argv[1]).rdbuf();
    auto sample = json::parse(text.str()).as_object();
    auto& input = sample["inputs"].as_array()[0].as_object();
    std::string raw;
    for (const auto& v : input["data"].as_array()) {
        const float f = static_cast<float>(v.to_number<double>());
        raw.append(reinterpret_cast<const char*>(&f), sizeof f);
    }
    input.erase("data");
    input["parameters"] = json::object{{"binary_data_size", raw.size()}};
    sample["parameters"] = json::object{{"binary_data_output", true}};
    const std::string header = json::serialize(sample);
    std::ofstream(argv[2], std::ios::binary) << header << raw;
    std::printf("%zu\n", header.size());
    return 0;
}
