// How the elements of a tensor of each datatype are read: the C++ type behind a dtype, and
// element i of a tensor's bytes. Shared by the request parser and the response writer.
#pragma once

#include <torchpool/task.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

namespace torchpool::serve {

// Calls f(std::type_identity<T>{}) with T the C++ type of an element of `type`; false for
// FP16 and BF16, which JSON does not carry here (they travel as binary data).
template <class F>
bool with_element_type(dtype type, F&& f) {
    switch (type) {
        case dtype::boolean:
            f(std::type_identity<bool>{});
            return true;
        case dtype::float32:
            f(std::type_identity<float>{});
            return true;
        case dtype::float64:
            f(std::type_identity<double>{});
            return true;
        case dtype::int8:
            f(std::type_identity<std::int8_t>{});
            return true;
        case dtype::uint8:
            f(std::type_identity<std::uint8_t>{});
            return true;
        case dtype::int16:
            f(std::type_identity<std::int16_t>{});
            return true;
        case dtype::int32:
            f(std::type_identity<std::int32_t>{});
            return true;
        case dtype::int64:
            f(std::type_identity<std::int64_t>{});
            return true;
        case dtype::float16:
        case dtype::bfloat16:
            return false;
    }
    return false;
}

// Element i of `bytes`, as a T.
template <class T>
T get(std::string_view bytes, std::size_t i) {
    T value;
    std::memcpy(&value, bytes.data() + i * sizeof(T), sizeof(T));
    return value;
}

}  // namespace torchpool::serve
