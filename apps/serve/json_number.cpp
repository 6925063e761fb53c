#include "json_number.hpp"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <limits>
#include <system_error>

namespace torchpool::serve {

namespace {

bool digit(char c) {
    return c >= '0' && c <= '9';
}

constexpr std::uint64_t lanes(std::uint8_t byte) {
    return 0x0101010101010101ull * byte;
}

// Appends the digits at `p` to `mantissa` (mantissa * 10 + digit for each, wrapping past
// 2^64 as the callers allow) and moves `p` past them; how many there were. Eight at a time
// where eight bytes remain (SWAR: a data array's numbers are mostly runs of a few digits,
// which cost a compare, a multiply and an add each one by one).
[[gnu::always_inline]] inline int append_digits(const char*& p, const char* end,
                                                std::uint64_t& mantissa) {
    static constexpr std::uint64_t powers[] = {1,      10,      100,      1000,     10000,
                                               100000, 1000000, 10000000, 100000000};
    int n = 0;
    while (end - p >= 8) {
        std::uint64_t chunk;
        std::memcpy(&chunk, p, sizeof chunk);  // the first character in the lowest byte
        // A byte is a digit if its high nibble is 3, and still 3 with 6 added (0x3A-0x3F
        // become 0x40-0x45). A carry out of a byte over 0xF9 only spoils the bytes after the
        // first that is not a digit, which are not used.
        const std::uint64_t not_digits = ((chunk & lanes(0xF0)) ^ lanes(0x30)) |
                                         (((chunk + lanes(0x06)) & lanes(0xF0)) ^ lanes(0x30));
        const int run = not_digits == 0 ? 8 : std::countr_zero(not_digits) / 8;
        if (run == 0) {
            return n;
        }
        // The run's digit values, moved to the top bytes (the bytes after it fall off; a
        // borrow from subtracting '0' only reaches those), then combined pairwise: 2 digits
        // per 16 bits, 4 per 32, 8 in all.
        std::uint64_t v = (chunk - lanes('0')) << (8 * (8 - run));
        v = (v * 10 + (v >> 8)) & 0x00FF00FF00FF00FFull;
        v = (v * 100 + (v >> 16)) & 0x0000FFFF0000FFFFull;
        v = (v * 10000 + (v >> 32)) & 0xFFFFFFFFull;
        mantissa = mantissa * powers[run] + v;
        n += run;
        p += run;
        if (run < 8) {
            return n;
        }
    }
    for (; p < end && digit(*p); ++p, ++n) {
        mantissa = mantissa * 10 + static_cast<unsigned>(*p - '0');
    }
    return n;
}

// For a number std::from_chars finds out of range: does it overflow (rather than underflow)?
// The power of ten of its first significant digit decides, as a double spans 10^-324 to
// 10^308. `text` has a digit other than zero.
bool overflows(std::string_view text) {
    const std::size_t e = std::min(text.find_first_of("eE"), text.size());
    std::int64_t power = -1;  // of the first significant digit, before the exponent
    bool fraction = false;
    for (std::size_t i = text.front() == '-' ? 1 : 0; i < e; ++i) {
        if (text[i] == '.') {
            fraction = true;
        } else if (!fraction) {
            power = power < 0 && text[i] == '0' ? -1 : power + 1;  // "0" is the only 0 to lead
        } else if (power < 0) {
            if (text[i] != '0') {
                break;
            }
            --power;
        }
    }
    std::int64_t exponent = 0;
    if (e < text.size()) {
        std::size_t i = e + 1;
        const bool minus = text[i] == '-';
        i += text[i] == '-' || text[i] == '+' ? 1 : 0;
        for (; i < text.size(); ++i) {
            exponent = std::min<std::int64_t>(exponent * 10 + (text[i] - '0'), 1'000'000'000);
        }
        exponent = minus ? -exponent : exponent;
    }
    return power + exponent > 0;
}

}  // namespace

double json_number_value(std::string_view text) {
    const bool negative = text.front() == '-';
    const auto mantissa_end = std::min(text.find_first_of("eE"), text.size());
    if (text.substr(0, mantissa_end).find_first_of("123456789") == std::string_view::npos) {
        return negative ? -0.0 : 0.0;  // zero, whatever the exponent
    }
    double d = 0;
    const auto [stop, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
    if (ec == std::errc::result_out_of_range) {
        d = overflows(text) ? std::numeric_limits<double>::infinity() : 0.0;
        return negative ? -d : d;
    }
    return d;
}

// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
bool read_json_number(const char*& p, const char* end, json_number& out) {
    const char* start = p;
    const bool negative = *p == '-';
    if (negative) {
        ++p;
    }
    if (p == end || !digit(*p)) {
        return false;
    }
    std::uint64_t mantissa = 0;
    int digits = 0;  // significant ones, in the mantissa
    if (*p == '0') {
        ++p;
    } else {
        digits = append_digits(p, end, mantissa);
    }
    int exponent = 0;  // of ten
    bool integer = true;
    if (p < end && *p == '.') {
        integer = false;
        ++p;
        if (p == end || !digit(*p)) {
            return false;
        }
        const char* fraction = p;
        if (mantissa == 0) {
            while (p < end && *p == '0') {  // zeros after the point lead nothing
                ++p;
            }
        }
        digits += append_digits(p, end, mantissa);
        exponent -= static_cast<int>(p - fraction);
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        integer = false;
        ++p;
        bool minus = false;
        if (p < end && (*p == '+' || *p == '-')) {
            minus = *p == '-';
            ++p;
        }
        if (p == end || !digit(*p)) {
            return false;
        }
        int e = 0;
        while (p < end && digit(*p)) {
            e = e * 10 + (*p - '0');
            if (e >= 100'000) {
                return false;
            }
            ++p;
        }
        exponent += minus ? -e : e;
    }
    if (integer) {
        if (digits > 18 || (negative && mantissa == 0)) {
            return false;
        }
        out.what = json_number::kind::int64;
        out.i =
            negative ? -static_cast<std::int64_t>(mantissa) : static_cast<std::int64_t>(mantissa);
        return true;
    }
    out.what = json_number::kind::real;
    // Both the mantissa (under 2^53) and the power of ten (up to 1e22) are exact doubles, so
    // one multiplication or division rounds correctly (Clinger's fast path).
    static constexpr double powers[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                        1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                        1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    if (digits <= 15 && exponent >= -22 && exponent <= 22) {
        const double m = static_cast<double>(mantissa);
        const double v = exponent < 0 ? m / powers[-exponent] : m * powers[exponent];
        out.d = negative ? -v : v;
        return true;
    }
    out.d = json_number_value({start, static_cast<std::size_t>(p - start)});
    return true;
}

}  // namespace torchpool::serve
