// Reading Fashion-MNIST as Debian's dataset-fashion-mnist package ships it: gzip'd IDX
// files in /usr/share/datasets/fashion-mnist. Plain C++ (zlib), no LibTorch, so that both
// the trainer and the host-side demo can use it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace torchpool::apps {

inline constexpr const char* default_fashion_mnist_dir = "/usr/share/datasets/fashion-mnist";
inline constexpr std::size_t image_side = 28;
inline constexpr std::size_t image_pixels = image_side * image_side;

/// The ten classes, in label order.
inline constexpr std::array<const char*, 10> fashion_mnist_classes = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

struct labelled_images {
    std::size_t count = 0;
    std::vector<std::uint8_t> pixels;  // count * 784 bytes, row-major, 0 = background
    std::vector<std::uint8_t> labels;  // count labels, 0..9
};

enum class split { train, test };

/// Reads one split from `dir`. Throws std::runtime_error naming the file and what is wrong
/// with it (missing, not gzip, wrong magic number, truncated, counts that disagree).
labelled_images read_fashion_mnist(const std::string& dir, split which);

}  // namespace torchpool::apps
