#include "infer_json.hpp"

#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>

namespace torchpool::serve {

namespace json = boost::json;

namespace {

// The Boost.JSON SAX handler of both paths. Streaming: the elements of every root.inputs[i].
// data (flat or nested any way) go into the flat list as they come, and the DOM gets the run's
// index instead. Over the fast path's rest of the text (`placeholders`): each such data must
// already be that index, in order; otherwise `mismatch()` (and the streaming path reads it).
class infer_handler {
public:
    static constexpr std::size_t max_object_size = json::object::max_size();
    static constexpr std::size_t max_array_size = json::array::max_size();
    static constexpr std::size_t max_key_size = json::string::max_size();
    static constexpr std::size_t max_string_size = json::string::max_size();

    infer_handler(json::storage_ptr storage, request_document& out, bool placeholders)
        : out_(out), placeholders_(placeholders) {
        dom_.reset(std::move(storage));
    }

    json::value release() { return dom_.release(); }
    /// Over placeholders: a data that was not the index expected, or fewer of them than runs.
    bool mismatch() const noexcept {
        return mismatch_ || (placeholders_ && placeholders_seen_ != out_.runs.size());
    }

    bool on_document_begin(json::error_code&) { return true; }
    bool on_document_end(json::error_code&) { return true; }
    bool on_object_begin(json::error_code&) {
        if (capturing()) {
            if (skip_++ == 0) {
                element(json_number::kind::other);  // an object among the numbers
            }
            return true;
        }
        not_a_placeholder();
        enter(container::object);
        return true;
    }
    bool on_object_end(std::size_t n, json::error_code&) {
        if (skip_ > 0) {
            if (--skip_ == 0 && capture_depth_ == 0) {
                end_capture();  // "data" was one object
            }
            return true;
        }
        leave();
        dom_.push_object(n);
        return true;
    }
    bool on_array_begin(json::error_code&) {
        if (skip_ > 0) {
            ++skip_;
        } else if (capturing()) {
            ++capture_depth_;
            capture_next_ = false;
        } else {
            not_a_placeholder();
            enter(container::array);
        }
        return true;
    }
    bool on_array_end(std::size_t n, json::error_code&) {
        if (skip_ > 0) {
            --skip_;
        } else if (capture_depth_ > 0) {
            if (--capture_depth_ == 0) {
                end_capture();
            }
        } else {
            leave();
            dom_.push_array(n);
        }
        return true;
    }
    bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
        if (skip_ == 0) {
            dom_.push_chars(s);
            if (depth_ <= 3) {
                key_.append(s.data(), s.size());
            }
        }
        return true;
    }
    bool on_key(json::string_view s, std::size_t, json::error_code&) {
        if (skip_ > 0) {
            return true;
        }
        dom_.push_key(s);
        if (depth_ <= 3) {
            key_.append(s.data(), s.size());
            if (depth_ == 1) {
                in_inputs_ = key_ == "inputs";
            } else if (depth_ == 3 && in_inputs_ && kinds_[1] == container::array &&
                       kinds_[2] == container::object && key_ == "data") {
                // root.inputs[i].data
                (placeholders_ ? expect_placeholder_ : capture_next_) = true;
            }
            key_.clear();
        }
        return true;
    }
    bool on_string_part(json::string_view s, std::size_t, json::error_code&) {
        if (!capturing()) {
            dom_.push_chars(s);
        }
        return true;
    }
    bool on_string(json::string_view s, std::size_t, json::error_code&) {
        if (capturing()) {
            scalar(json_number::kind::other);
        } else {
            not_a_placeholder();
            dom_.push_string(s);
        }
        return true;
    }
    bool on_number_part(json::string_view, json::error_code&) { return true; }
    bool on_int64(std::int64_t i, json::string_view, json::error_code&) {
        if (capturing()) {
            scalar(json_number::kind::int64).i = i;
            return true;
        }
        if (expect_placeholder_) {
            expect_placeholder_ = false;
            mismatch_ = mismatch_ || i != static_cast<std::int64_t>(placeholders_seen_++);
        }
        dom_.push_int64(i);
        return true;
    }
    bool on_uint64(std::uint64_t u, json::string_view, json::error_code&) {
        if (capturing()) {
            scalar(json_number::kind::uint64).u = u;
        } else {
            not_a_placeholder();
            dom_.push_uint64(u);
        }
        return true;
    }
    bool on_double(double d, json::string_view text, json::error_code&) {
        if (std::isnan(d)) {
            // JSON has no NaN: Boost.JSON 1.81 reads a zero with a huge exponent ("0e3081")
            // as 0 times infinity. It is zero, as the fast path reads it.
            d = !text.empty() && text.front() == '-' ? -0.0 : 0.0;
        }
        if (capturing()) {
            scalar(json_number::kind::real).d = d;
        } else {
            not_a_placeholder();
            dom_.push_double(d);
        }
        return true;
    }
    bool on_bool(bool b, json::error_code&) {
        if (capturing()) {
            scalar(json_number::kind::boolean).b = b;
        } else {
            not_a_placeholder();
            dom_.push_bool(b);
        }
        return true;
    }
    bool on_null(json::error_code&) {
        if (capturing()) {
            scalar(json_number::kind::other);
        } else {
            not_a_placeholder();
            dom_.push_null();
        }
        return true;
    }
    bool on_comment_part(json::string_view, json::error_code&) { return true; }
    bool on_comment(json::string_view, json::error_code&) { return true; }

private:
    enum class container : std::uint8_t { object, array };

    bool capturing() const noexcept { return capture_next_ || capture_depth_ > 0 || skip_ > 0; }
    void not_a_placeholder() {
        mismatch_ = mismatch_ || expect_placeholder_;
        expect_placeholder_ = false;
    }
    void enter(container c) {
        if (depth_ < std::size(kinds_)) {
            kinds_[depth_] = c;
        }
        ++depth_;
    }
    void leave() {
        --depth_;
        if (depth_ == 1) {
            in_inputs_ = false;
        }
    }
    json_number& element(json_number::kind k) {
        if (capture_begin_ == npos) {
            capture_begin_ = out_.numbers.size();
        }
        auto& n = out_.numbers.emplace_back();
        n.what = k;
        return n;
    }
    // A scalar inside a captured "data" (ignored inside an object there).
    json_number& scalar(json_number::kind k) {
        if (skip_ > 0) {
            return ignored_;
        }
        json_number& n = element(k);
        if (capture_depth_ == 0) {
            end_capture();  // "data" was this one scalar
        }
        return n;
    }
    void end_capture() {
        const std::size_t begin = capture_begin_ == npos ? out_.numbers.size() : capture_begin_;
        out_.runs.push_back({begin, out_.numbers.size()});
        dom_.push_int64(static_cast<std::int64_t>(out_.runs.size() - 1));
        capture_begin_ = npos;
        capture_next_ = false;
    }

    static constexpr std::size_t npos = static_cast<std::size_t>(-1);
    request_document& out_;
    const bool placeholders_;
    json::value_stack dom_;
    std::string key_;
    container kinds_[4]{};
    std::size_t depth_ = 0;
    bool in_inputs_ = false;
    bool capture_next_ = false;
    std::size_t capture_depth_ = 0;  // arrays open inside a captured "data"
    std::size_t skip_ = 0;           // containers open inside an object inside "data"
    std::size_t capture_begin_ = npos;
    json_number ignored_{};
    bool expect_placeholder_ = false;
    std::size_t placeholders_seen_ = 0;
    bool mismatch_ = false;
};

json::error_code parse_with(std::string_view text, request_document& out, bool placeholders,
                            bool& mismatch) {
    json::basic_parser<infer_handler> parser(json::parse_options{}, out.dom.storage(), out,
                                             placeholders);
    json::error_code ec;
    const std::size_t used = parser.write_some(false, text.data(), text.size(), ec);
    if (!ec && used < text.size()) {
        ec = json::error::extra_data;
    }
    if (!ec) {
        out.dom = parser.handler().release();  // the same storage: moved, not copied
        mismatch = parser.handler().mismatch();
    }
    return ec;
}

// The fast path's reader of a data array: nested arrays of plain JSON numbers, strictly by
// JSON's grammar; false for anything else (the streaming path then reads the request).
class number_array_reader {
public:
    explicit number_array_reader(std::vector<json_number>& out) : out_(out) {}

    /// Reads the array at `p` ('['); `p` ends past its ']'.
    bool read(const char*& p, const char* end, int depth = 0) {
        if (depth > 32) {
            return false;
        }
        ++p;  // '['
        skip_space(p, end);
        if (p < end && *p == ']') {
            ++p;
            return true;
        }
        for (;;) {
            skip_space(p, end);
            if (p == end) {
                return false;
            }
            if (*p == '[') {
                if (!read(p, end, depth + 1)) {
                    return false;
                }
            } else if (!read_number(p, end)) {
                return false;
            }
            skip_space(p, end);
            if (p == end) {
                return false;
            }
            if (*p == ',') {
                ++p;
                continue;
            }
            if (*p == ']') {
                ++p;
                return true;
            }
            return false;
        }
    }

private:
    static void skip_space(const char*& p, const char* end) {
        // Nothing to skip, mostly: one test for any character above the space.
        while (p < end && static_cast<unsigned char>(*p) <= ' ' &&
               (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) {
            ++p;
        }
    }
    static bool digit(char c) { return c >= '0' && c <= '9'; }

    // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, as Boost.JSON classifies it: an integer
    // as int64, anything else as a double. Integers of more than 18 digits, and -0, are left
    // to the streaming path (uint64, or a double, there).
    bool read_number(const char*& p, const char* end) {
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
            while (p < end && digit(*p)) {
                mantissa = mantissa * 10 + static_cast<unsigned>(*p - '0');
                ++digits;
                ++p;
            }
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
            const char* significant = p;
            while (p < end && digit(*p)) {
                mantissa = mantissa * 10 + static_cast<unsigned>(*p - '0');
                ++p;
            }
            digits += static_cast<int>(p - significant);
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
                e = std::min(e * 10 + (*p - '0'), 100000);
                ++p;
            }
            exponent += minus ? -e : e;
        }
        auto& n = out_.emplace_back();
        if (integer) {
            if (digits > 18 || (negative && mantissa == 0)) {
                return false;
            }
            n.what = json_number::kind::int64;
            n.i = negative ? -static_cast<std::int64_t>(mantissa)
                           : static_cast<std::int64_t>(mantissa);
            return true;
        }
        n.what = json_number::kind::real;
        // Both the mantissa (under 2^53) and the power of ten (up to 1e22) are exact doubles,
        // so one multiplication or division rounds correctly (Clinger's fast path); otherwise
        // std::from_chars, which rounds correctly too.
        static constexpr double powers[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                            1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
        if (digits <= 15 && exponent >= -22 && exponent <= 22) {
            const double m = static_cast<double>(mantissa);
            const double v = exponent < 0 ? m / powers[-exponent] : m * powers[exponent];
            n.d = negative ? -v : v;
            return true;
        }
        const auto [stop, ec] = std::from_chars(start, p, n.d);
        return ec == std::errc{} && stop == p;
    }

    std::vector<json_number>& out_;
};

// The fast path's scan: finds each root.inputs[i].data, reads it if it is an array of numbers,
// and writes the rest of the text to `skeleton` with that array replaced by its run's index.
// False if anything needs the streaming path. It does not check the JSON outside the arrays it
// reads: the skeleton, which keeps all of it, goes through Boost.JSON; and an array replaced
// by a number keeps a text valid or invalid as it was.
bool scan(std::string_view text, request_document& out, std::string& skeleton) {
    const char* p = text.data();
    const char* const end = p + text.size();
    const char* copied = p;  // text before this is in the skeleton
    // For each open container: is it an object, and does it wait for a key.
    struct frame {
        bool object;
        bool wants_key;
    };
    frame open[33];
    std::size_t depth = 0;
    bool in_inputs = false;  // the current root key is "inputs"
    bool data_next = false;  // a value of root.inputs[i].data comes next
    number_array_reader numbers(out.numbers);
    while (p < end) {
        const char c = *p;
        if (data_next && c != ':' && c != ' ' && c != '\n' && c != '\r' && c != '\t') {
            if (c != '[') {
                return false;
            }
            const std::size_t begin = out.numbers.size();
            if (begin == 0) {
                // At most one number in two bytes: no growing while reading (up to a bound).
                out.numbers.reserve(
                    std::min<std::size_t>(static_cast<std::size_t>(end - p) / 2, 1u << 20));
            }
            const char* value = p;
            if (!numbers.read(p, end)) {
                return false;
            }
            out.runs.push_back({begin, out.numbers.size()});
            skeleton.append(copied, value);
            skeleton += std::to_string(out.runs.size() - 1);
            copied = p;
            data_next = false;
            continue;
        }
        switch (c) {
            case '{':
            case '[':
                if (depth == std::size(open)) {
                    return false;
                }
                open[depth++] = {c == '{', c == '{'};
                ++p;
                break;
            case '}':
            case ']':
                if (depth == 0) {
                    return false;
                }
                if (--depth == 1) {
                    in_inputs = false;
                }
                ++p;
                break;
            case ',':
                if (depth > 0 && open[depth - 1].object) {
                    open[depth - 1].wants_key = true;
                }
                ++p;
                break;
            case ':':
                if (depth > 0) {
                    open[depth - 1].wants_key = false;
                }
                ++p;
                break;
            case '"': {
                const char* start = ++p;
                bool escaped = false;
                while (p < end && *p != '"') {
                    if (*p == '\\') {
                        escaped = true;
                        ++p;
                    }
                    ++p;
                }
                if (p >= end) {
                    return false;
                }
                const std::string_view s(start, static_cast<std::size_t>(p - start));
                ++p;
                const bool key = depth > 0 && open[depth - 1].wants_key;
                if (key && (depth == 1 || depth == 3)) {
                    if (escaped) {
                        return false;  // a key to compare, left to the full parser
                    }
                    if (depth == 1) {
                        in_inputs = s == "inputs";
                    } else {
                        data_next = in_inputs && !open[1].object && open[2].object && s == "data";
                    }
                }
                break;
            }
            default:
                ++p;  // white space, and numbers and literals outside the data
        }
    }
    skeleton.append(copied, end);
    return !data_next;
}

}  // namespace

json::error_code read_request_document(std::string_view text, request_document& out,
                                       json_reading how) {
    bool mismatch = false;
    if (how == json_reading::fast_when_possible) {
        std::string skeleton;
        if (scan(text, out, skeleton)) {
            if (const auto ec = parse_with(skeleton, out, true, mismatch); !ec && !mismatch) {
                out.fast = true;
                return ec;
            }
        }
        out.numbers.clear();
        out.runs.clear();
    }
    return parse_with(text, out, false, mismatch);
}

}  // namespace torchpool::serve
