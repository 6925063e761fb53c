// The infer request's JSON reader: its fast path (a scan and a strict number reader) must read
// every text exactly as the streaming path (Boost.JSON's SAX parser over all of it) does, or
// leave it to that path. Checked on chosen texts, and on thousands of random requests, good
// and broken.
#include "infer_json.hpp"

#include "json_number.hpp"

#include <boost/json.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>

using namespace torchpool::serve;
namespace json = boost::json;

namespace {

struct both {
    request_document fast, streaming;
    json::error_code fast_error, streaming_error;
};

both read_both(std::string_view text) {
    both r;
    r.fast_error = read_request_document(text, r.fast, json_reading::fast_when_possible);
    r.streaming_error = read_request_document(text, r.streaming, json_reading::streaming_only);
    return r;
}

bool same_number(const json_number& a, const json_number& b) {
    if (a.what != b.what) {
        return false;
    }
    switch (a.what) {
        case json_number::kind::int64:
            return a.i == b.i;
        case json_number::kind::uint64:
            return a.u == b.u;
        case json_number::kind::real:
            // Both paths take the value from one reader: the same bits (the sign of a zero too).
            return std::memcmp(&a.d, &b.d, sizeof a.d) == 0;
        case json_number::kind::boolean:
            return a.b == b.b;
        case json_number::kind::other:
            return true;
    }
    return false;
}

// The two paths agree: both refuse the text, or both read the same document.
void check_same(const std::string& text) {
    INFO("text: " << text);
    const both r = read_both(text);
    REQUIRE(static_cast<bool>(r.fast_error) == static_cast<bool>(r.streaming_error));
    if (r.streaming_error) {
        return;
    }
    CHECK(r.fast.dom == r.streaming.dom);
    REQUIRE(r.fast.runs.size() == r.streaming.runs.size());
    for (std::size_t k = 0; k < r.fast.runs.size(); ++k) {
        CHECK(r.fast.runs[k].begin == r.streaming.runs[k].begin);
        CHECK(r.fast.runs[k].end == r.streaming.runs[k].end);
    }
    REQUIRE(r.fast.numbers.size() == r.streaming.numbers.size());
    for (std::size_t i = 0; i < r.fast.numbers.size(); ++i) {
        INFO("element " << i);
        CHECK(same_number(r.fast.numbers[i], r.streaming.numbers[i]));
    }
}

// Random infer-request-like texts: keys in any order, white space anywhere, data flat or
// nested, numbers of every JSON form, sometimes things that are not numbers, "data" keys in
// other places, escaped keys.
class request_maker {
public:
    explicit request_maker(unsigned seed) : random_(seed) {}

    std::string make() {
        std::string t = "{";
        bool first = true;
        const auto key = [&](const std::string& k) {
            t += first ? "" : ",";
            first = false;
            t += space() + "\"" + k + "\"" + space() + ":" + space();
        };
        if (chance(0.3)) {
            key("id");
            t += "\"request " + std::to_string(random_() % 100) + "\"";
        }
        if (chance(0.2)) {
            key("parameters");
            t += R"({"data": [1, 2], "inputs": [{"data": [3]}]})";
        }
        key(chance(0.05) ? "in\\u0070uts" : "inputs");
        t += "[";
        const int inputs = 1 + static_cast<int>(random_() % 3);
        for (int i = 0; i < inputs; ++i) {
            t += (i ? "," : "") + space() + input() + space();
        }
        t += "]";
        if (chance(0.2)) {
            key("outputs");
            t += R"([{"name": "y", "data": [5]}])";
        }
        return t + space() + "}";
    }

private:
    bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(random_) < p; }
    std::string space() {
        static const char* spaces[] = {"", "", "", " ", "\n  ", "\t", " \r\n"};
        return spaces[random_() % std::size(spaces)];
    }
    std::string number() {
        std::string n = chance(0.3) ? "-" : "";
        switch (chance(0.01) ? 6 : chance(0.02) ? 5 : random_() % 5) {
            case 0:
                return n + "0";
            case 1:
                return n + std::to_string(random_() % 1000);
            case 2: {  // a float32 written as text, as clients do
                char text[32];
                const float f = std::uniform_real_distribution<float>(0, 1)(random_);
                const auto [end, ec] = std::to_chars(text, text + sizeof text, f);
                return n + std::string(text, end);
            }
            case 3:
                return n + std::to_string(random_() % 100) + "." +
                       std::to_string(random_() % 1000) +
                       (chance(0.5) ? "e" + std::to_string(static_cast<int>(random_() % 40) - 20)
                                    : "");
            case 4:
                return n + "0.000" + std::to_string(random_() % 100000) + "E+2";
            case 5:  // beyond a double's range, or past what Boost.JSON takes (2^31)
                return n + (chance(0.5) ? "0" : "4.5") + "e" + (chance(0.5) ? "-" : "") +
                       std::to_string(chance(0.5) ? 300 + random_() % 200 : random_() * 4ull);
            default:
                return n + std::to_string(random_()) + std::to_string(random_());  // long
        }
    }
    std::string element() {
        if (chance(0.02)) {
            static const char* odd[] = {"null", "true", "\"7\"", "{\"x\": [1]}", "[]"};
            return odd[random_() % std::size(odd)];
        }
        return number();
    }
    std::string data(int depth) {
        if (depth == 0 && chance(0.02)) {
            return element();  // a scalar "data"
        }
        std::string t = "[";
        const int n = static_cast<int>(random_() % 12);
        for (int i = 0; i < n; ++i) {
            t += (i ? "," : "") + space() +
                 (depth < 3 && chance(0.15) ? data(depth + 1) : element()) + space();
        }
        return t + "]";
    }
    std::string input() {
        std::vector<std::string> fields = {
            R"("name": "x)" + std::to_string(random_() % 3) + "\"", R"("datatype": "FP32")",
            R"("shape": [1, 2])", (chance(0.05) ? R"("d\u0061ta": )" : R"("data": )") + data(0)};
        if (chance(0.2)) {
            fields.push_back(R"("parameters": {"data": [9, 9]})");
        }
        std::shuffle(fields.begin(), fields.end(), random_);
        std::string t = "{";
        for (std::size_t i = 0; i < fields.size(); ++i) {
            t += (i ? "," : "") + space() + fields[i];
        }
        return t + "}";
    }

    std::mt19937 random_;
};

}  // namespace

TEST_CASE("the fast JSON path reads a plain request, and exactly as the streaming path does",
          "[serve][json]") {
    const std::string text =
        R"({"id": "a", "inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 4],
            "data": [0, 0.0117647, -1.5e3, 12]}]})";
    const both r = read_both(text);
    REQUIRE_FALSE(r.fast_error);
    CHECK(r.fast.fast);  // taken
    CHECK_FALSE(r.streaming.fast);
    check_same(text);
    REQUIRE(r.fast.numbers.size() == 4);
    CHECK(r.fast.numbers[1].d == 0.0117647);
    CHECK(r.fast.numbers[2].d == -1500.0);
    CHECK(r.fast.numbers[3].i == 12);
}

TEST_CASE("the fast path reads each number as std::from_chars does: correctly rounded",
          "[serve][json]") {
    std::mt19937 random(11);
    for (int i = 0; i < 20000; ++i) {
        std::string number = random() % 2 ? "-" : "";
        number += std::to_string(random() % 100000);
        if (random() % 4) {
            number += "." + std::to_string(random() % 100000000);
        }
        if (random() % 3 == 0) {
            number += "e" + std::to_string(static_cast<int>(random() % 60) - 30);
        }
        request_document doc;
        REQUIRE_FALSE(read_request_document(R"({"inputs": [{"data": [)" + number + "]}]}", doc));
        REQUIRE(doc.numbers.size() == 1);
        INFO("number: " << number);
        if (doc.numbers[0].what == json_number::kind::int64) {
            CHECK(doc.numbers[0].i == std::stoll(number));
            continue;
        }
        double want = 0;
        std::from_chars(number.data(), number.data() + number.size(), want);
        CHECK(doc.numbers[0].d == want);
    }
}

TEST_CASE("a number read alone, to the last byte of its buffer, eight digits at a time or not",
          "[serve][json]") {
    // Runs of 1 to 25 digits on both sides of the point, each number in a buffer of its own
    // size (AddressSanitizer sees a read past it), and again with a comma after it.
    std::mt19937 random(12);
    const auto digits = [&](std::size_t n, bool lead) {
        std::string d;
        for (std::size_t i = 0; i < n; ++i) {
            d += static_cast<char>('0' + (i == 0 && lead ? 1 + random() % 9 : random() % 10));
        }
        return d;
    };
    for (int i = 0; i < 20000; ++i) {
        std::string number = random() % 4 == 0 ? "-" : "";
        number += random() % 5 == 0 ? "0" : digits(1 + random() % 25, true);
        const bool integer = random() % 3 == 0;
        if (!integer) {
            number += "." + digits(1 + random() % 25, false);
        }
        for (const std::string& after : {std::string(), std::string(",")}) {
            const std::string text = number + after;
            const auto buffer = std::make_unique<char[]>(text.size());
            std::memcpy(buffer.get(), text.data(), text.size());
            const char* p = buffer.get();
            const char* const end = p + text.size();
            json_number got{};
            INFO("number: " << text);
            const bool read = read_array_number(p, end, got);
            const std::size_t integer_digits = number.size() - (number[0] == '-' ? 1 : 0);
            if (integer && (integer_digits > 18 || number == "-0")) {
                CHECK_FALSE(read);  // left to Boost.JSON
                continue;
            }
            REQUIRE(read);
            CHECK(p == buffer.get() + number.size());
            if (integer) {
                REQUIRE(got.what == json_number::kind::int64);
                CHECK(got.i == std::stoll(number));
            } else {
                REQUIRE(got.what == json_number::kind::real);
                double want = 0;
                std::from_chars(number.data(), number.data() + number.size(), want);
                CHECK(got.d == want);
            }
        }
    }
}

TEST_CASE("a number's value: correctly rounded, infinite above a double's range, zero below",
          "[serve][json]") {
    const auto bits = [](double d) {
        std::uint64_t b;
        std::memcpy(&b, &d, sizeof b);
        return b;
    };
    const double inf = std::numeric_limits<double>::infinity();
    struct {
        const char* text;
        double want;
    } cases[] = {
        {"4.5e182", 4.5000000000000003e+182},  // Boost.JSON 1.81: 4.4999999999999997e+182
        {"86.4e287", 8.6399999999999997e+288},
        {"0e3081", 0.0},  // Boost.JSON 1.81: NaN
        {"-0.000e99999", -0.0},
        {"0e30922337203685477580781", 0.0},  // Boost.JSON 1.81 refuses it
        {"1e400", inf},
        {"-12.5e308", -inf},
        {"0.000001e309", 1e303},
        {"0.0000001e-318", 0.0},  // 1e-325: below the least double
        {"-1e-400", -0.0},
        {"123456789012345678901234567890e-330", 1.2345678901234568e-301},
        {"1e30922337203685477580781", inf},
        {"1e-30922337203685477580781", 0.0},
        {"4.9406564584124654e-324", 4.9406564584124654e-324},
    };
    for (const auto& c : cases) {
        INFO("number: " << c.text);
        CHECK(bits(json_number_value(c.text)) == bits(c.want));
        // The same value on both ways of reading a request, or both refuse it.
        check_same(std::string(R"({"inputs": [{"data": [)") + c.text + "]}]}");
    }
}

TEST_CASE("texts the fast path leaves to the streaming path are read all the same",
          "[serve][json]") {
    for (const char* text : {
             R"({"inputs": [{"data": 5}]})",                               // a scalar data
             R"({"inputs": [{"data": [1, "2", null, true, {"a": 1}]}]})",  // not only numbers
             R"({"inputs": [{"d\u0061ta": [1, 2]}]})",                     // an escaped key
             R"({"inp\u0075ts": [{"data": [1, 2]}]})",
             R"({"inputs": [{"data": [12345678901234567890, -0, 1]}]})",  // left to Boost
             R"({"inputs": [{"data": [1.7976931348623157e308, 5e-324, 1e400]}]})",
             // zeros with an exponent Boost.JSON reads as NaN, and one it refuses
             R"({"inputs": [{"data": [0e3081, -0.0e99999, 0e2147483647]}]})",
             R"({"inputs": [{"data": [1, 0e30922337203685477580781]}]})",
             R"({"inputs": [{"data": [4.5e182, 9.02e139, -4.9645076e-80]}]})",  // Boost: 1 ulp off
             R"({"inputs": [{"data": [1, 2]}, {"data": [[3], [4]]}], "x": "data"})",
             R"({"inputs": {"data": [1]}})",  // inputs an object: not captured
         }) {
        check_same(text);
    }
}

TEST_CASE("broken texts are refused by both paths", "[serve][json]") {
    for (const char* text : {
             R"({"inputs": [{"data": [1, 2,]}]})",
             R"({"inputs": [{"data": [1 2]}]})",
             R"({"inputs": [{"data": [01]}]})",
             R"({"inputs": [{"data": [1.]}]})",
             R"({"inputs": [{"data": [.5]}]})",
             R"({"inputs": [{"data": [1e]}]})",
             R"({"inputs": [{"data": [+1]}]})",
             R"({"inputs": [{"data": [1]]}]})",
             R"({"inputs": [{"data" [1]}]})",
             R"({"inputs": [{"data": [1]}]} [])",
             R"({"inputs": [{"data": [1]})",
             R"({"inputs": [{"data": [NaN]}]})",
             R"({"inputs": [{"data": [1], "name": "x}]})",
             "",
         }) {
        INFO("text: " << text);
        const both r = read_both(text);
        CHECK(r.fast_error);
        CHECK(r.streaming_error);
    }
}

TEST_CASE("thousands of random requests, whole and broken, read the same both ways",
          "[serve][json]") {
    request_maker maker(20261126);
    std::mt19937 random(7);
    int fast = 0;
    for (int i = 0; i < 3000; ++i) {
        std::string text = maker.make();
        fast += read_both(text).fast.fast ? 1 : 0;
        check_same(text);
        // The same text broken at one place: a character removed, or one put in.
        const auto at = random() % text.size();
        static const char inserts[] = "[]{},:\"0-.e \\";
        std::string broken = text;
        if (random() % 2) {
            broken.erase(at, 1);
        } else {
            broken.insert(broken.begin() + static_cast<std::ptrdiff_t>(at),
                          inserts[random() % (sizeof inserts - 1)]);
        }
        check_same(broken);
    }
    // Both paths are well exercised (the maker leans to the unusual: -0, escapes, odd elements).
    CHECK(fast > 500);
    CHECK(fast < 2500);
}
