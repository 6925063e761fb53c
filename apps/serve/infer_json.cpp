#include "infer_json.hpp"

#include "infer_json_scan.hpp"

#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>

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
    // The whole text goes to the parser in one write, so a number is never split: Boost.JSON
    // gives a part only where the text ends inside a number, which is then an error.
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
    bool on_double(double, json::string_view text, json::error_code&) {
        // Not Boost.JSON's value: the fast path's reader's, correctly rounded (json_number.hpp).
        const double d = json_number_value(text);
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

}  // namespace

json::error_code read_request_document(std::string_view text, request_document& out,
                                       json_reading how) {
    bool mismatch = false;
    if (how == json_reading::fast_when_possible) {
        std::string skeleton;
        if (scan_request(text, out, skeleton)) {
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
