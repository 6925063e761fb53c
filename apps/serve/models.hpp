// The models torchpool-serve serves, made from its options: a config, a pool of workers and a
// batcher for each.
#pragma once

#include "config.hpp"
#include "served_model.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <functional>
#include <string>
#include <vector>

namespace torchpool::serve {

/// The pools and batchers of `opt.models` on `ex` (not running yet). `all_ready` runs once,
/// when every worker of every pool has been ready once. Throws std::runtime_error naming what is
/// wrong with an option or a model.
std::vector<served_model> make_models(boost::asio::any_io_executor ex, const server_options& opt,
                                      std::function<void()> all_ready);

/// A request a person can send with curl: the model's own sample (PATH.sample.json beside it),
/// else zeros of each input's shape (a batch of 1 where the size is free) written to a
/// temporary file. Its path.
std::string sample_request(const model_config& model);

}  // namespace torchpool::serve
