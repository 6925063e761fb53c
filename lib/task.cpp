#include <torchpool/task.hpp>

#include <functional>
#include <string.h>
#include <string_view>

#include <signal.h>

namespace torchpool {

std::size_t element_size(dtype t) noexcept {
    switch (t) {
        case dtype::float64:
        case dtype::int64:
            return 8;
        case dtype::float32:
        case dtype::int32:
            return 4;
        case dtype::float16:
        case dtype::bfloat16:
        case dtype::int16:
            return 2;
        case dtype::int8:
        case dtype::uint8:
        case dtype::boolean:
            return 1;
    }
    return 1;
}

const char* dtype_name(dtype t) noexcept {
    switch (t) {
        case dtype::float32:
            return "float32";
        case dtype::float64:
            return "float64";
        case dtype::float16:
            return "float16";
        case dtype::bfloat16:
            return "bfloat16";
        case dtype::int64:
            return "int64";
        case dtype::int32:
            return "int32";
        case dtype::int16:
            return "int16";
        case dtype::int8:
            return "int8";
        case dtype::uint8:
            return "uint8";
        case dtype::boolean:
            return "bool";
    }
    return "unknown";
}

tensor_view tensor_view::of(const tensor& t) {
    return {t.type, t.shape, t.bytes(), nullptr};
}

tensor_view tensor_view::owning(tensor t) {
    auto kept = std::make_shared<const tensor>(std::move(t));
    auto view = of(*kept);
    view.owner = std::move(kept);
    return view;
}

tensor tensor_view::copy() const {
    return {type, shape, std::string(reinterpret_cast<const char*>(data.data()), data.size())};
}

namespace {

// boost::hash_combine's step, widened to 64 bits.
std::uint64_t combine(std::uint64_t seed, std::uint64_t value) noexcept {
    return seed ^ (value + 0x9e3779b97f4a7c15u + (seed << 12) + (seed >> 4));
}

std::uint64_t hash_bytes(std::string_view bytes) noexcept {
    return std::hash<std::string_view>{}(bytes);
}

}  // namespace

std::uint64_t fingerprint(const request& req) {
    std::uint64_t h = combine(hash_bytes(req.method), hash_bytes(req.payload));
    for (const auto& t : req.tensors) {
        h = combine(h, static_cast<std::uint64_t>(t.type));
        h = combine(h, t.shape.size());
        for (const auto extent : t.shape) {
            h = combine(h, static_cast<std::uint64_t>(extent));
        }
        h = combine(h, hash_bytes(t.chars()));
    }
    return h == 0 ? 1 : h;  // zero means "none" to the pool
}

std::string describe_fault(const fault& f) {
    switch (f.what) {
        case fault::kind::none:
            return "no fault";
        case fault::kind::crash:
            return "crash with " + signal_name(static_cast<int>(f.value));
        case fault::kind::exit:
            return "exit with code " + std::to_string(f.value);
        case fault::kind::hang:
            return "hang";
        case fault::kind::leak:
            return "leak " + std::to_string(f.value >> 20) + " MiB";
        case fault::kind::delay:
            return "answer " + std::to_string(f.value) + " ms late";
        case fault::kind::garbage:
            return "send garbage";
        case fault::kind::fail:
            return "fail";
    }
    return "unknown fault";
}

std::string signal_name(int signo) {
    // sigabbrev_np (glibc 2.32) gives "KILL" for SIGKILL, without allocating.
    if (const char* abbrev = ::sigabbrev_np(signo)) {
        return std::string("SIG") + abbrev;
    }
    return "signal " + std::to_string(signo);
}

}  // namespace torchpool
