#include "torch_reference.hpp"

#include "../../apps/fashion_mnist.hpp"
#include "torch_worker/runtime.hpp"

#include <torch/script.h>

#include <ATen/Parallel.h>

namespace torchpool::test {

tensor fashion_test_images(std::size_t n) {
    static const auto set =
        apps::read_fashion_mnist(apps::default_fashion_mnist_dir, apps::split::test);
    tensor t(dtype::float32, {static_cast<std::int64_t>(n), 1, 28, 28});
    t.data.resize(n * apps::image_pixels * sizeof(float));
    auto* out = reinterpret_cast<float*>(t.data.data());
    for (std::size_t i = 0; i < n * apps::image_pixels; ++i) {
        out[i] = static_cast<float>(set.pixels[i]) / 255.0f;
    }
    return t;
}

tensor run_in_process(const std::string& model_path, const std::string& method,
                      const tensor& input) {
    at::set_num_threads(1);  // as the worker: one thread per worker on this machine
    auto module = torch::jit::load(model_path);
    module.eval();
    c10::InferenceMode guard;
    auto output = module.get_method(method)({torch_worker::to_torch(tensor_view::of(input))});
    return torch_worker::from_torch(output.toTensor()).copy();
}

void write_spinning_model(const std::string& path) {
    torch::jit::Module m("Spin");
    m.define(R"TS(
def forward(self, x):
    return x * 2

def spin(self, x, n):
    y = x
    for i in range(int(n.item())):
        y = y + 0
    return y
)TS");
    m.save(path);
}

}  // namespace torchpool::test
