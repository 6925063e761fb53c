// Writes the binary request body of bench/serve_load.sh: the model's sample request (JSON
// tensors) as Triton's binary tensor extension has it, a JSON header followed by the raw
// float32 bytes; prints the header's length (Inference-Header-Content-Length). With IMAGES, the
// sample's image is sent that many times in one request (a large body).
//
// Usage: torchpool-bench-serve-bodies SAMPLE.json OUT [IMAGES]
#include <boost/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace json = boost::json;

int main(int argc, char** argv) {
    if (argc != 3 && argc != 4) {
        std::fprintf(stderr, "usage: %s SAMPLE.json OUT [IMAGES]\n", argv[0]);
        return 64;
    }
    const long images = argc == 4 ? std::atol(argv[3]) : 1;
    if (images < 1) {
        std::fprintf(stderr, "%s: IMAGES must be a whole number >= 1, not '%s'\n", argv[0],
                     argv[3]);
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
    input["shape"].as_array()[0] = images;
    const std::string one = raw;
    for (long i = 1; i < images; ++i) {
        raw += one;
    }
    input["parameters"] = json::object{{"binary_data_size", raw.size()}};
    sample["parameters"] = json::object{{"binary_data_output", true}};
    const std::string header = json::serialize(sample);
    std::ofstream(argv[2], std::ios::binary) << header << raw;
    std::printf("%zu\n", header.size());
    return 0;
}
