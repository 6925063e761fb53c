// A model the server serves: its config, its pool of workers and its batcher.
#pragma once

#include "batcher.hpp"
#include "model_config.hpp"
#include <torchpool/pool.hpp>

#include <memory>

namespace torchpool::serve {

struct served_model {
    model_config config;
    std::unique_ptr<pool> workers;
    std::unique_ptr<batcher> batches;
};

}  // namespace torchpool::serve
