// Fuzz target: a model's config file (model.json beside model.pt), as torchpool-serve reads it
// at start. Anything but a config it can serve is refused with a std::runtime_error that
// names the file; a config it accepts has tensors that requests can be checked against.
#include "model_config.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

using namespace torchpool::serve;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        const auto config = parse_model_config("m", "/m/model.pt", text, "model.json");
        if (config.inputs.empty() || config.outputs.empty()) {
            std::fprintf(stderr, "model_config_fuzz: a config without inputs or outputs\n");
            std::abort();
        }
        for (const auto* list : {&config.inputs, &config.outputs}) {
            for (std::size_t i = 0; i < list->size(); ++i) {
                for (std::size_t j = 0; j < i; ++j) {
                    if ((*list)[i].name == (*list)[j].name) {
                        std::fprintf(stderr, "model_config_fuzz: two tensors of one name\n");
                        std::abort();
                    }
                }
            }
        }
        for (const auto& spec : config.inputs) {
            // Every input's own shape (its -1s as 1) fits it.
            auto shape = spec.shape;
            for (auto& d : shape) {
                d = d == -1 ? 1 : d;
            }
            if (!check_shape(spec, shape, config.name).empty()) {
                std::fprintf(stderr, "model_config_fuzz: a spec refuses its own shape\n");
                std::abort();
            }
            (void)oip_datatype(spec.type);
            (void)format_shape(spec.shape);
        }
    } catch (const std::runtime_error& e) {
        if (std::string_view(e.what()).find("model.json") == std::string_view::npos) {
            std::fprintf(stderr, "model_config_fuzz: an error that does not name the file: %s\n",
                         e.what());
            std::abort();
        }
    }
    return 0;
}
