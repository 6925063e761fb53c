#include <torchpool/task.hpp>

#include <string.h>

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
    return {t.type, t.shape, std::as_bytes(std::span(t.data.data(), t.data.size())), nullptr};
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

std::string signal_name(int signo) {
    // sigabbrev_np (glibc 2.32) gives "KILL" for SIGKILL, without allocating.
    if (const char* abbrev = ::sigabbrev_np(signo)) {
        return std::string("SIG") + abbrev;
    }
    return "signal " + std::to_string(signo);
}

}  // namespace torchpool
