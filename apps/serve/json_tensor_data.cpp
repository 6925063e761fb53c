#include "json_tensor_data.hpp"

#include "tensor_elements.hpp"

#include <cstring>
#include <limits>
#include <type_traits>

namespace torchpool::serve {

namespace {

// What a JSON element of a tensor of T's must be, for an error.
template <class T>
constexpr const char* wanted_element() {
    if constexpr (std::is_same_v<T, bool>) {
        return "true or false";
    } else if constexpr (std::is_floating_point_v<T>) {
        return "a number";
    } else if constexpr (std::is_same_v<T, std::int8_t>) {
        return "an integer in [-128, 127]";
    } else if constexpr (std::is_same_v<T, std::uint8_t>) {
        return "an integer in [0, 255]";
    } else if constexpr (std::is_same_v<T, std::int16_t>) {
        return "an integer in [-32768, 32767]";
    } else if constexpr (std::is_same_v<T, std::int32_t>) {
        return "a 32-bit integer";
    } else {
        return "an integer";
    }
}

// An element as a value of type T; false if it is not one (or out of T's range).
template <class T>
bool element_as(const json_number& v, T& out) {
    using k = json_number::kind;
    if constexpr (std::is_same_v<T, bool>) {
        if (v.what != k::boolean) {
            return false;  // and v.b is not the union's member to read
        }
        out = v.b;
        return true;
    } else if constexpr (std::is_floating_point_v<T>) {
        switch (v.what) {
            case k::real:
                out = static_cast<T>(v.d);
                return true;
            case k::int64:
                out = static_cast<T>(v.i);
                return true;
            case k::uint64:
                out = static_cast<T>(v.u);
                return true;
            default:
                return false;
        }
    } else {
        std::int64_t n = 0;
        if (v.what == k::int64) {
            n = v.i;
        } else if (v.what == k::uint64 &&
                   v.u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
            n = static_cast<std::int64_t>(v.u);
        } else {
            return false;
        }
        out = static_cast<T>(n);
        return n >= std::numeric_limits<T>::min() && n <= std::numeric_limits<T>::max();
    }
}

// Writes `count` elements as T's into `bytes`; the index of the first that is not one.
template <class T>
std::optional<std::size_t> convert_as(const json_number* values, std::size_t count,
                                      std::span<std::byte> bytes) {
    std::byte* out = bytes.data();
    for (std::size_t i = 0; i < count; ++i) {
        T value;
        if (!element_as(values[i], value)) {
            return i;
        }
        std::memcpy(out + i * sizeof(T), &value, sizeof(T));
    }
    return std::nullopt;
}

}  // namespace

std::optional<std::string> json_tensor_data(dtype type, const json_number* values,
                                            std::size_t count, std::span<std::byte> bytes,
                                            const std::string& name) {
    if (bytes.size() != count * element_size(type)) {
        return "input '" + name + "': " + std::to_string(count) + " elements do not fill " +
               std::to_string(bytes.size()) + " bytes";  // a tensor not of the input's shape
    }
    std::optional<std::size_t> bad;
    const char* wanted = "";
    const bool carried = with_element_type(type, [&](auto element) {
        using T = typename decltype(element)::type;
        bad = convert_as<T>(values, count, bytes);
        wanted = wanted_element<T>();
    });
    if (!carried) {
        return "input '" + name +
               "' is FP16 or BF16, which JSON data cannot carry; send it as binary data";
    }
    if (bad) {
        return "element " + std::to_string(*bad) + " of input '" + name + "' is not " + wanted;
    }
    return std::nullopt;
}

}  // namespace torchpool::serve
