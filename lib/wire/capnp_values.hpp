// Conversions between our values and Cap'n Proto's readers, for the encoder and the decoder.
#pragma once

#include "messages.hpp"

#include <capnp/blob.h>

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace torchpool::wire::values {

inline capnp::Text::Reader text(const std::string& s) {
    return {s.c_str(), s.size()};
}

inline capnp::Text::Reader text(std::string_view s) {
    return {s.data(), s.size()};
}

inline capnp::Data::Reader data(const std::string& s) {
    return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

inline capnp::Data::Reader data(std::span<const std::byte> bytes) {
    return {reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size()};
}

inline capnp::Data::Reader data(std::string_view s) {
    return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

inline std::string to_string(capnp::Text::Reader t) {
    return {t.begin(), t.size()};
}

inline std::string to_string(capnp::Data::Reader d) {
    return {reinterpret_cast<const char*>(d.begin()), d.size()};
}

inline std::span<const std::byte> bytes_of(const tensor& t) {
    return t.bytes();
}

inline std::span<const std::byte> bytes_of(const tensor_view& t) {
    return t.data;
}

}  // namespace torchpool::wire::values
