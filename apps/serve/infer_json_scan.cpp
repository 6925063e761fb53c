#include "infer_json_scan.hpp"

#include <algorithm>
#include <iterator>

namespace torchpool::serve {

namespace {

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
            } else if (!read_array_number(p, end, out_.emplace_back())) {
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
    std::vector<json_number>& out_;
};

}  // namespace

bool scan_request(std::string_view text, request_document& out, std::string& skeleton) {
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

}  // namespace torchpool::serve
