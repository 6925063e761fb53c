#include "fashion_mnist.hpp"

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <zlib.h>

namespace torchpool::apps {

namespace {

std::vector<std::uint8_t> gunzip_file(const std::string& path) {
    gzFile f = ::gzopen(path.c_str(), "rb");
    if (!f) {
        throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno) +
                                 " (install the Debian package dataset-fashion-mnist, or "
                                 "pass the directory that holds the files)");
    }
    std::vector<std::uint8_t> bytes;
    std::array<std::uint8_t, 1 << 16> chunk;
    for (;;) {
        const int n = ::gzread(f, chunk.data(), static_cast<unsigned>(chunk.size()));
        if (n < 0) {
            int code = 0;
            const std::string why = ::gzerror(f, &code);
            ::gzclose(f);
            throw std::runtime_error("cannot decompress " + path + ": " + why);
        }
        if (n == 0) {
            break;
        }
        bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + n);
    }
    ::gzclose(f);
    return bytes;
}

std::uint32_t big_endian_u32(const std::vector<std::uint8_t>& b, std::size_t at) {
    return (std::uint32_t{b[at]} << 24) | (std::uint32_t{b[at + 1]} << 16) |
           (std::uint32_t{b[at + 2]} << 8) | std::uint32_t{b[at + 3]};
}

// An IDX file: magic 0x000008NN (unsigned bytes, NN dimensions), the dimensions, the data.
std::vector<std::uint8_t> read_idx(const std::string& path, std::uint32_t dimensions,
                                   std::vector<std::uint32_t>& sizes) {
    auto bytes = gunzip_file(path);
    const std::size_t header = 4 + 4 * dimensions;
    if (bytes.size() < header) {
        throw std::runtime_error(path + " is too short to be an IDX file (" +
                                 std::to_string(bytes.size()) + " bytes)");
    }
    const std::uint32_t magic = big_endian_u32(bytes, 0);
    if (magic != (0x0800u | dimensions)) {
        throw std::runtime_error(path + " is not an IDX file of unsigned bytes with " +
                                 std::to_string(dimensions) + " dimensions (magic number " +
                                 std::to_string(magic) + ")");
    }
    std::size_t expected = 1;
    sizes.clear();
    for (std::uint32_t d = 0; d < dimensions; ++d) {
        sizes.push_back(big_endian_u32(bytes, 4 + 4 * d));
        expected *= sizes.back();
    }
    if (bytes.size() - header != expected) {
        throw std::runtime_error(path + " holds " + std::to_string(bytes.size() - header) +
                                 " bytes of data; its header announces " +
                                 std::to_string(expected));
    }
    bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(header));
    return bytes;
}

}  // namespace

labelled_images read_fashion_mnist(const std::string& dir, split which) {
    const std::string prefix = dir + (which == split::train ? "/train" : "/t10k");
    std::vector<std::uint32_t> image_sizes, label_sizes;
    labelled_images out;
    out.pixels = read_idx(prefix + "-images-idx3-ubyte.gz", 3, image_sizes);
    out.labels = read_idx(prefix + "-labels-idx1-ubyte.gz", 1, label_sizes);
    if (image_sizes[1] != image_side || image_sizes[2] != image_side) {
        throw std::runtime_error(prefix + "-images-idx3-ubyte.gz holds images of " +
                                 std::to_string(image_sizes[1]) + "x" +
                                 std::to_string(image_sizes[2]) + " pixels, not 28x28");
    }
    if (image_sizes[0] != label_sizes[0]) {
        throw std::runtime_error(prefix + ": " + std::to_string(image_sizes[0]) + " images but " +
                                 std::to_string(label_sizes[0]) + " labels");
    }
    for (auto label : out.labels) {
        if (label >= fashion_mnist_classes.size()) {
            throw std::runtime_error(prefix + "-labels-idx1-ubyte.gz holds label " +
                                     std::to_string(label) + ", outside 0..9");
        }
    }
    out.count = image_sizes[0];
    return out;
}

}  // namespace torchpool::apps
