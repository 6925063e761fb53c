// A JSON number, as an infer request's tensor data holds it, and the one reader of its value.
// Both ways of reading a request (infer_json.hpp) take a number's value from here, so they
// cannot disagree: Boost.JSON 1.81's own reading is off in the last place for about a quarter
// of the numbers with large exponents, and reads a zero with an exponent past 308 as NaN.
#pragma once

#include <cstdint>
#include <string_view>

namespace torchpool::serve {

/// An element of an input's "data", as the JSON had it (the tensor's datatype may come after
/// its data, so it is converted once the whole request is read).
struct json_number {
    enum class kind : std::uint8_t { int64, uint64, real, boolean, other } what;
    union {
        std::int64_t i;
        std::uint64_t u;
        double d;
        bool b;
    };
};

/// The double that `text`, a JSON number, means: correctly rounded; infinite (with its sign)
/// above the range of a double, zero (with its sign) below the least one. `text` must follow
/// JSON's grammar.
double json_number_value(std::string_view text);

/// Reads the JSON number at `p` into `out`, classified as Boost.JSON does (an integer as
/// int64, any other number as a double), and moves `p` past it. False, with `p` anywhere, for
/// text that is not a JSON number and for numbers left to Boost.JSON: integers of more than 18
/// digits (uint64, or a double, there), -0 (an int64 there), and exponents of 100,000 or more
/// (Boost.JSON refuses those from 2^31 on, as "exponent overflow").
bool read_json_number(const char*& p, const char* end, json_number& out);

/// read_json_number, with a plain 0 before ',' or ']' (an image's most common element) read
/// here, without a call.
inline bool read_array_number(const char*& p, const char* end, json_number& out) {
    if (end - p >= 2 && p[0] == '0' && (p[1] == ',' || p[1] == ']')) {
        out.what = json_number::kind::int64;
        out.i = 0;
        ++p;
        return true;
    }
    return read_json_number(p, end, out);
}

}  // namespace torchpool::serve
