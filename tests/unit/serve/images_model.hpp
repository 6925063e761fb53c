// The small model the protocol's unit tests parse requests for: one FP32 input "images"
// [-1, 1, 2, 2], outputs "logits" FP32 [-1, 3] and "label" INT64 [-1].
#pragma once

#include "model_config.hpp"

namespace torchpool::serve::test {

inline model_config images_model() {
    return parse_model_config("fashion", "/models/fashion.pt", R"({
        "method": "forward",
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 2, 2]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]},
                    {"name": "label", "datatype": "INT64", "shape": [-1]}]})",
                              "fashion.json");
}

}  // namespace torchpool::serve::test
