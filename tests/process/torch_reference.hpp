// What the LibTorch tests compute in their own process, in a file of its own so that the
// test file includes no LibTorch header (glog's CHECK macro would replace Catch's).
#pragma once

#include <torchpool/task.hpp>

#include <cstddef>
#include <string>

namespace torchpool::test {

/// `method` of the TorchScript model at `model_path` run here, on one thread, on `input`.
tensor run_in_process(const std::string& model_path, const std::string& method,
                      const tensor& input);

/// The first `n` Fashion-MNIST test images as float32 [n, 1, 28, 28] in [0, 1], the input
/// the default model expects.
tensor fashion_test_images(std::size_t n);

/// Writes a model whose `spin(x, n)` loops n times and whose `forward(x)` doubles x.
void write_spinning_model(const std::string& path);

}  // namespace torchpool::test
