#include "oip.hpp"

#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

namespace torchpool::serve {

namespace json = boost::json;

namespace {

// An element of an input's "data", as the JSON had it: the tensor's datatype may come after
// its data in the object, so the conversion waits for the end of the document.
struct number {
    enum class kind : std::uint8_t { int64, uint64, real, boolean, other } what;
    union {
        std::int64_t i;
        std::uint64_t u;
        double d;
        bool b;
    };
};

// A Boost.JSON SAX handler for infer requests. The numbers of every inputs[i].data (flat or
// nested any way) go straight into one flat list, without a JSON value each: they are nearly
// all of a request, and building and freeing a DOM of them cost more than the model's forward.
// Everything else becomes a small DOM as json::parser would build it, with each captured
// "data" replaced by the index of its run of numbers.
class infer_handler {
public:
    static constexpr std::size_t max_object_size = json::object::max_size();
    static constexpr std::size_t max_array_size = json::array::max_size();
    static constexpr std::size_t max_key_size = json::string::max_size();
    static constexpr std::size_t max_string_size = json::string::max_size();

    struct run {
        std::size_t begin, end;
    };

    explicit infer_handler(json::storage_ptr storage) { dom_.reset(std::move(storage)); }

    json::value release() { return dom_.release(); }
    const std::vector<number>& numbers() const noexcept { return numbers_; }
    const std::vector<run>& runs() const noexcept { return runs_; }

    bool on_document_begin(json::error_code&) { return true; }
    bool on_document_end(json::error_code&) { return true; }
    bool on_object_begin(json::error_code&) {
        if (capturing()) {
            if (skip_++ == 0) {
                element(number::kind::other);  // an object among the numbers
            }
            return true;
        }
        enter(container::object);
        return true;
    }
    bool on_object_end(std::size_t n, json::error_code&) {
        if (skip_ > 0) {
            if (--skip_ == 0) {
                captured_value_done();
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
            } else if (depth_ == 3) {
                // root.inputs[i].data: its numbers are captured.
                capture_next_ = in_inputs_ && kinds_[1] == container::array &&
                                kinds_[2] == container::object && key_ == "data";
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
            scalar(number::kind::other);
        } else {
            dom_.push_string(s);
        }
        return true;
    }
    bool on_number_part(json::string_view, json::error_code&) { return true; }
    bool on_int64(std::int64_t i, json::string_view, json::error_code&) {
        if (capturing()) {
            scalar(number::kind::int64).i = i;
        } else {
            dom_.push_int64(i);
        }
        return true;
    }
    bool on_uint64(std::uint64_t u, json::string_view, json::error_code&) {
        if (capturing()) {
            scalar(number::kind::uint64).u = u;
        } else {
            dom_.push_uint64(u);
        }
        return true;
    }
    bool on_double(double d, json::string_view, json::error_code&) {
        if (capturing()) {
            scalar(number::kind::real).d = d;
        } else {
            dom_.push_double(d);
        }
        return true;
    }
    bool on_bool(bool b, json::error_code&) {
        if (capturing()) {
            scalar(number::kind::boolean).b = b;
        } else {
            dom_.push_bool(b);
        }
        return true;
    }
    bool on_null(json::error_code&) {
        if (capturing()) {
            scalar(number::kind::other);
        } else {
            dom_.push_null();
        }
        return true;
    }
    bool on_comment_part(json::string_view, json::error_code&) { return true; }
    bool on_comment(json::string_view, json::error_code&) { return true; }

private:
    enum class container : std::uint8_t { object, array };

    bool capturing() const noexcept { return capture_next_ || capture_depth_ > 0 || skip_ > 0; }
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
    number& element(number::kind k) {
        if (capture_begin_ == npos) {
            capture_begin_ = numbers_.size();
        }
        auto& n = numbers_.emplace_back();
        n.what = k;
        return n;
    }
    // A scalar inside a captured "data" (skipped if inside an object there).
    number& scalar(number::kind k) {
        if (skip_ > 0) {
            return ignored_;
        }
        number& n = element(k);
        if (capture_depth_ == 0) {
            end_capture();  // "data" was this one scalar
        }
        return n;
    }
    void captured_value_done() {
        if (capture_depth_ == 0) {
            end_capture();  // "data" was one object
        }
    }
    void end_capture() {
        const std::size_t begin = capture_begin_ == npos ? numbers_.size() : capture_begin_;
        runs_.push_back({begin, numbers_.size()});
        dom_.push_int64(static_cast<std::int64_t>(runs_.size() - 1));
        capture_begin_ = npos;
        capture_next_ = false;
    }

    static constexpr std::size_t npos = static_cast<std::size_t>(-1);
    json::value_stack dom_;
    std::vector<number> numbers_;
    std::vector<run> runs_;
    std::string key_;
    container kinds_[4]{};
    std::size_t depth_ = 0;
    bool in_inputs_ = false;
    bool capture_next_ = false;
    std::size_t capture_depth_ = 0;  // arrays open inside a captured "data"
    std::size_t skip_ = 0;           // containers open inside an object inside "data"
    std::size_t capture_begin_ = npos;
    number ignored_{};
};

template <class T>
void put(std::string& bytes, std::size_t i, T value) {
    std::memcpy(bytes.data() + i * sizeof(T), &value, sizeof(T));
}

// Writes element `i` of a tensor of `type` from `v`; empty, or what is wrong.
std::string store(dtype type, const number& v, std::string& bytes, std::size_t i) {
    using k = number::kind;
    switch (type) {
        case dtype::boolean:
            if (v.what != k::boolean) {
                return "true or false";
            }
            put<std::uint8_t>(bytes, i, v.b ? 1 : 0);
            return {};
        case dtype::float32:
        case dtype::float64: {
            double d = 0;
            if (v.what == k::real) {
                d = v.d;
            } else if (v.what == k::int64) {
                d = static_cast<double>(v.i);
            } else if (v.what == k::uint64) {
                d = static_cast<double>(v.u);
            } else {
                return "a number";
            }
            if (type == dtype::float32) {
                put<float>(bytes, i, static_cast<float>(d));
            } else {
                put<double>(bytes, i, d);
            }
            return {};
        }
        case dtype::int8:
        case dtype::int16:
        case dtype::int32:
        case dtype::int64:
        case dtype::uint8: {
            std::int64_t n = 0;
            if (v.what == k::int64) {
                n = v.i;
            } else if (v.what == k::uint64 &&
                       v.u <=
                           static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
                n = static_cast<std::int64_t>(v.u);
            } else {
                return "an integer";
            }
            const auto in = [&](auto lo, auto hi) { return n >= lo && n <= hi; };
            switch (type) {
                case dtype::int8:
                    if (!in(-128, 127))
                        return "an integer in [-128, 127]";
                    put<std::int8_t>(bytes, i, static_cast<std::int8_t>(n));
                    return {};
                case dtype::uint8:
                    if (!in(0, 255))
                        return "an integer in [0, 255]";
                    put<std::uint8_t>(bytes, i, static_cast<std::uint8_t>(n));
                    return {};
                case dtype::int16:
                    if (!in(-32768, 32767))
                        return "an integer in [-32768, 32767]";
                    put<std::int16_t>(bytes, i, static_cast<std::int16_t>(n));
                    return {};
                case dtype::int32:
                    if (!in(std::numeric_limits<std::int32_t>::min(),
                            std::numeric_limits<std::int32_t>::max())) {
                        return "a 32-bit integer";
                    }
                    put<std::int32_t>(bytes, i, static_cast<std::int32_t>(n));
                    return {};
                default:
                    put<std::int64_t>(bytes, i, n);
                    return {};
            }
        }
        case dtype::float16:
        case dtype::bfloat16:
            return "FP16 and BF16 data in JSON are not supported; send them as binary data";
    }
    return "a value";
}

template <class T>
T get(const std::string& bytes, std::size_t i) {
    T value;
    std::memcpy(&value, bytes.data() + i * sizeof(T), sizeof(T));
    return value;
}

// The response is written straight to text rather than built as a DOM and serialized: it is
// on every request's path.

void append_string(std::string& out, std::string_view text) {
    out += '"';
    for (const char c : text) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            static constexpr char hex[] = "0123456789abcdef";
            out += "\\u00";
            out += hex[(c >> 4) & 0xf];
            out += hex[c & 0xf];
        } else {
            out += c;
        }
    }
    out += '"';
}

template <class T>
void append_number(std::string& out, T value) {
    if constexpr (std::is_floating_point_v<T>) {
        // JSON has no NaN or infinity: null, and a number too large for a double (as
        // Boost.JSON writes them).
        if (std::isnan(value)) {
            out += "null";
            return;
        }
        if (std::isinf(value)) {
            out += value < 0 ? "-1e99999" : "1e99999";
            return;
        }
    }
    char text[32];
    // The shortest text that reads back as the same value (of T: a float32 logit is written
    // as a float, not as the double it widens to).
    const auto [end, ec] = std::to_chars(text, text + sizeof text, value);
    out.append(text, end);
    if constexpr (std::is_floating_point_v<T>) {
        if (std::find_if(text, end, [](char c) { return c == '.' || c == 'e'; }) == end) {
            out += ".0";  // 2.0, not 2: a client that types by the text reads a float
        }
    }
}

template <class T>
void append_data(std::string& out, const std::string& bytes, std::size_t elements) {
    for (std::size_t e = 0; e < elements; ++e) {
        if (e > 0) {
            out += ',';
        }
        if constexpr (std::is_same_v<T, bool>) {
            out += get<std::uint8_t>(bytes, e) != 0 ? "true" : "false";
        } else {
            append_number(out, get<T>(bytes, e));
        }
    }
}

void append_shape(std::string& out, const std::vector<std::int64_t>& shape) {
    out += '[';
    for (std::size_t d = 0; d < shape.size(); ++d) {
        if (d > 0) {
            out += ',';
        }
        append_number(out, shape[d]);
    }
    out += ']';
}

json::object spec_json(const tensor_spec& s) {
    json::array shape;
    for (const auto d : s.shape) {
        shape.push_back(d);
    }
    return {{"name", s.name}, {"datatype", oip_datatype(s.type)}, {"shape", std::move(shape)}};
}

http_error bad(std::string message) {
    return {400, std::move(message)};
}

}  // namespace

std::variant<infer_request, http_error> parse_infer_request(
    std::string_view body, const model_config& model, std::optional<std::size_t> header_length) {
    std::string_view binary;
    if (header_length) {
        if (*header_length > body.size()) {
            return bad("Inference-Header-Content-Length is " + std::to_string(*header_length) +
                       ", but the body has only " + std::to_string(body.size()) + " bytes");
        }
        binary = body.substr(*header_length);
        body = body.substr(0, *header_length);
    }
    // The small DOM lives in this buffer (or, past it, in blocks of the monotonic resource), so
    // freeing it is one step.
    unsigned char first_block[4096];
    json::monotonic_resource memory(first_block, sizeof first_block);
    json::basic_parser<infer_handler> parser(json::parse_options{}, json::storage_ptr(&memory));
    boost::system::error_code ec;
    const std::size_t used = parser.write_some(false, body.data(), body.size(), ec);
    if (!ec && used < body.size()) {
        ec = json::error::extra_data;
    }
    if (ec) {
        return bad("the request body is not valid JSON: " + ec.message());
    }
    const json::value v = parser.handler().release();
    const auto& numbers = parser.handler().numbers();
    const auto& runs = parser.handler().runs();
    const auto* o = v.if_object();
    if (!o) {
        return bad("the request body must be a JSON object with \"inputs\"");
    }
    infer_request req;
    if (const auto* id = o->if_contains("id")) {
        if (!id->is_string()) {
            return bad("\"id\" must be text");
        }
        req.id = std::string(id->as_string());
    }
    const auto* inputs = o->if_contains("inputs");
    if (!inputs || !inputs->is_array() || inputs->as_array().empty()) {
        return bad("\"inputs\" must be a non-empty list of tensors");
    }
    std::vector<const json::object*> by_position(model.inputs.size(), nullptr);
    // Triton's binary tensor extension: an input's bytes follow the JSON header, in the order
    // of the inputs that have parameters.binary_data_size.
    std::vector<std::optional<std::string_view>> bytes_of(model.inputs.size());
    std::size_t binary_at = 0;
    for (const auto& input : inputs->as_array()) {
        const auto* t = input.if_object();
        const auto* name = t ? t->if_contains("name") : nullptr;
        if (!name || !name->is_string()) {
            return bad("each input must be an object with a \"name\"");
        }
        std::size_t at = 0;
        while (at < model.inputs.size() && model.inputs[at].name != name->as_string()) {
            ++at;
        }
        if (at == model.inputs.size()) {
            std::string names;
            for (const auto& s : model.inputs) {
                names += (names.empty() ? "" : ", ") + s.name;
            }
            return bad("model '" + model.name + "' has no input named '" +
                       std::string(name->as_string()) + "'; its inputs: " + names);
        }
        if (by_position[at]) {
            return bad("input '" + model.inputs[at].name + "' is given twice");
        }
        by_position[at] = t;
        const auto* params = t->if_contains("parameters");
        const auto* size = params && params->is_object()
                               ? params->as_object().if_contains("binary_data_size")
                               : nullptr;
        if (size) {
            if (!size->is_int64() || size->as_int64() < 0) {
                return bad("parameters.binary_data_size of input '" + model.inputs[at].name +
                           "' must be a byte count");
            }
            const auto n = static_cast<std::size_t>(size->as_int64());
            if (binary_at + n > binary.size()) {
                return bad("input '" + model.inputs[at].name + "' announces " + std::to_string(n) +
                           " bytes of binary data, but " +
                           (header_length ? std::to_string(binary.size() - binary_at) +
                                                " remain after the JSON header"
                                          : std::string("the request has no "
                                                        "Inference-Header-Content-Length")));
            }
            bytes_of[at] = binary.substr(binary_at, n);
            binary_at += n;
        }
    }
    if (binary_at != binary.size()) {
        return bad(std::to_string(binary.size() - binary_at) +
                   " bytes after the JSON header belong to no input (binary_data_size)");
    }
    for (std::size_t at = 0; at < model.inputs.size(); ++at) {
        const auto& spec = model.inputs[at];
        const auto* t = by_position[at];
        if (!t) {
            return bad("input '" + spec.name + "' of model '" + model.name + "' is missing");
        }
        const auto* datatype = t->if_contains("datatype");
        const auto* shape = t->if_contains("shape");
        const auto* data = t->if_contains("data");
        if (!datatype || !datatype->is_string() || !shape || !shape->is_array() ||
            (!data && !bytes_of[at])) {
            return bad("input '" + spec.name +
                       "' needs \"datatype\", \"shape\" and \"data\" (or binary data)");
        }
        const auto type = from_oip_datatype(datatype->as_string());
        if (!type) {
            return bad("input '" + spec.name + "' has datatype \"" +
                       std::string(datatype->as_string()) + "\", which this server does not know");
        }
        if (*type != spec.type) {
            return bad("input '" + spec.name + "' has datatype " +
                       std::string(datatype->as_string()) + ", but model '" + model.name +
                       "' wants " + std::string(oip_datatype(spec.type)));
        }
        std::vector<std::int64_t> dims;
        std::uint64_t elements = 1;
        for (const auto& d : shape->as_array()) {
            if (!d.is_int64() || d.as_int64() < 0) {
                return bad("the shape of input '" + spec.name + "' must hold sizes >= 0");
            }
            dims.push_back(d.as_int64());
            elements *= static_cast<std::uint64_t>(d.as_int64());
            if (elements > (1u << 28)) {
                return http_error{413, "input '" + spec.name + "' is too large"};
            }
        }
        if (auto problem = check_shape(spec, dims, model.name); !problem.empty()) {
            return bad(problem);
        }
        if (bytes_of[at]) {
            const std::size_t want = elements * element_size(spec.type);
            if (bytes_of[at]->size() != want) {
                return bad("input '" + spec.name + "' has shape " + format_shape(dims) + " of " +
                           std::string(oip_datatype(spec.type)) + ", which takes " +
                           std::to_string(want) + " bytes, but its binary data has " +
                           std::to_string(bytes_of[at]->size()));
            }
            req.inputs.emplace_back(spec.type, dims, std::string(*bytes_of[at]));
            continue;
        }
        // The parser replaced "data" by the index of its run of numbers.
        const auto& run = runs[static_cast<std::size_t>(data->as_int64())];
        const std::size_t count = run.end - run.begin;
        if (count != elements) {
            return bad("input '" + spec.name + "' has shape " + format_shape(dims) +
                       ", which holds " + std::to_string(elements) +
                       " elements, but its data has " + std::to_string(count));
        }
        tensor value(spec.type, dims);
        value.data.resize(count * element_size(spec.type));
        for (std::size_t i = 0; i < count; ++i) {
            if (auto wanted = store(spec.type, numbers[run.begin + i], value.data, i);
                !wanted.empty()) {
                return bad("element " + std::to_string(i) + " of input '" + spec.name +
                           "' is not " + wanted);
            }
        }
        req.inputs.push_back(std::move(value));
    }
    if (const auto* parameters = o->if_contains("parameters")) {
        if (!parameters->is_object()) {
            return bad("\"parameters\" must be an object");
        }
        if (const auto* all = parameters->as_object().if_contains("binary_data_output")) {
            req.binary_outputs = all->is_bool() && all->as_bool();
        }
        if (const auto* f = parameters->as_object().if_contains("torchpool_fault")) {
            const std::string_view kind = f->is_string() ? f->as_string() : "";
            if (kind == "crash") {
                req.inject = fault::crash(11);
            } else if (kind == "exit") {
                req.inject = fault::exit(1);
            } else if (kind == "hang") {
                req.inject = fault::hang();
            } else if (kind == "leak") {
                req.inject = fault::leak(64u << 20);
            } else if (kind == "delay") {
                req.inject = fault::delay(std::chrono::milliseconds(100));
            } else if (kind == "garbage") {
                req.inject = fault::garbage();
            } else if (kind == "fail") {
                req.inject = fault::fail();
            } else {
                return bad(
                    "parameters.torchpool_fault must be one of crash, exit, hang, leak, "
                    "delay, garbage, fail");
            }
        }
    }
    if (const auto* outputs = o->if_contains("outputs")) {
        if (!outputs->is_array()) {
            return bad("\"outputs\" must be a list of {\"name\": ...}");
        }
        for (const auto& out : outputs->as_array()) {
            const auto* t = out.if_object();
            const auto* name = t ? t->if_contains("name") : nullptr;
            if (!name || !name->is_string()) {
                return bad("each requested output must be an object with a \"name\"");
            }
            if (const auto* p = t->if_contains("parameters"); p && p->is_object()) {
                if (const auto* b = p->as_object().if_contains("binary_data")) {
                    if (b->is_bool() && b->as_bool()) {
                        req.binary_output_names.emplace_back(name->as_string());
                    }
                }
            }
            bool known = false;
            for (const auto& s : model.outputs) {
                known = known || s.name == name->as_string();
            }
            if (!known) {
                return bad("model '" + model.name + "' has no output named '" +
                           std::string(name->as_string()) + "'");
            }
            req.outputs.emplace_back(name->as_string());
        }
    }
    return req;
}

std::variant<encoded_response, http_error> infer_response(const model_config& model,
                                                          const infer_request& request,
                                                          const std::vector<tensor>& results,
                                                          std::size_t batch_rows) {
    std::string binary;
    if (results.size() != model.outputs.size()) {
        return http_error{500, "model '" + model.name + "' returned " +
                                   std::to_string(results.size()) +
                                   " tensors, but its config lists " +
                                   std::to_string(model.outputs.size()) + " outputs"};
    }
    std::string text = "{\"model_name\":";
    append_string(text, model.name);
    text += ",\"model_version\":";
    append_string(text, model.version);
    if (!request.id.empty()) {
        text += ",\"id\":";
        append_string(text, request.id);
    }
    if (batch_rows > 0) {
        text += ",\"parameters\":{\"torchpool_batch_rows\":";
        append_number(text, batch_rows);
        text += '}';
    }
    text += ",\"outputs\":[";
    bool first = true;
    for (std::size_t i = 0; i < results.size(); ++i) {
        const auto& spec = model.outputs[i];
        if (!request.outputs.empty() && std::find(request.outputs.begin(), request.outputs.end(),
                                                  spec.name) == request.outputs.end()) {
            continue;
        }
        const auto& t = results[i];
        const bool as_binary =
            request.binary_outputs ||
            std::find(request.binary_output_names.begin(), request.binary_output_names.end(),
                      spec.name) != request.binary_output_names.end();
        if (!as_binary && (t.type == dtype::float16 || t.type == dtype::bfloat16)) {
            return http_error{500, "output '" + spec.name +
                                       "' is FP16 or BF16, which this "
                                       "server cannot write as JSON yet"};
        }
        text += first ? "{\"name\":" : ",{\"name\":";
        first = false;
        append_string(text, spec.name);
        text += ",\"datatype\":";
        append_string(text, oip_datatype(t.type));
        text += ",\"shape\":";
        append_shape(text, t.shape);
        if (as_binary) {
            text += ",\"parameters\":{\"binary_data_size\":";
            append_number(text, t.data.size());
            text += "}}";
            binary += t.data;
            continue;
        }
        std::size_t elements = 1;
        for (const auto d : t.shape) {
            elements *= static_cast<std::size_t>(d);
        }
        if (t.data.size() != elements * element_size(t.type)) {
            return http_error{500, "output '" + spec.name + "' has " +
                                       std::to_string(t.data.size()) + " bytes for shape " +
                                       format_shape(t.shape)};
        }
        text += ",\"data\":[";
        switch (t.type) {
            case dtype::boolean:
                append_data<bool>(text, t.data, elements);
                break;
            case dtype::float32:
                append_data<float>(text, t.data, elements);
                break;
            case dtype::float64:
                append_data<double>(text, t.data, elements);
                break;
            case dtype::int8:
                append_data<std::int8_t>(text, t.data, elements);
                break;
            case dtype::uint8:
                append_data<std::uint8_t>(text, t.data, elements);
                break;
            case dtype::int16:
                append_data<std::int16_t>(text, t.data, elements);
                break;
            case dtype::int32:
                append_data<std::int32_t>(text, t.data, elements);
                break;
            case dtype::int64:
                append_data<std::int64_t>(text, t.data, elements);
                break;
            case dtype::float16:
            case dtype::bfloat16:
                break;  // refused above
        }
        text += "]}";
    }
    text += "]}";
    encoded_response out{std::move(text), std::nullopt};
    if (!binary.empty() || request.binary_outputs || !request.binary_output_names.empty()) {
        out.header_length = out.body.size();
        out.body += binary;
    }
    return out;
}

std::string error_json(std::string_view message) {
    return json::serialize(json::object{{"error", message}});
}

std::string server_metadata_json() {
    return json::serialize(
        json::object{{"name", "torchpool"}, {"version", "0.1"}, {"extensions", json::array{}}});
}

std::string model_metadata_json(const model_config& model) {
    json::array inputs;
    json::array outputs;
    for (const auto& s : model.inputs) {
        inputs.push_back(spec_json(s));
    }
    for (const auto& s : model.outputs) {
        outputs.push_back(spec_json(s));
    }
    return json::serialize(json::object{{"name", model.name},
                                        {"versions", json::array{model.version}},
                                        {"platform", "pytorch_torchscript"},
                                        {"inputs", std::move(inputs)},
                                        {"outputs", std::move(outputs)}});
}

}  // namespace torchpool::serve
