// An input's "data" elements, as a JSON request gave them, written as a tensor's bytes of its
// datatype: each element checked to be one of that type (true or false for BOOL, a number for
// floats, an integer in range for the integer types).
#pragma once

#include "json_number.hpp"
#include <torchpool/task.hpp>

#include <cstddef>
#include <optional>
#include <span>
#include <string>

namespace torchpool::serve {

/// Writes the `count` elements at `values` into `bytes` (exactly `count` elements of `type`
/// long, e.g. a tensor in the pool's input memory) as elements of `type`. The error, for input
/// `name`, names the first element that is not one (or that FP16 and BF16 travel only as
/// binary data).
std::optional<std::string> json_tensor_data(dtype type, const json_number* values,
                                            std::size_t count, std::span<std::byte> bytes,
                                            const std::string& name);

}  // namespace torchpool::serve
