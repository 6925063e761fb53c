#include "oip.hpp"

#include "infer_json.hpp"

#include <boost/json.hpp>

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>

namespace torchpool::serve {

namespace json = boost::json;

namespace {

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

// What a JSON element of a tensor of T's must be, for an error.
template <class T>
constexpr const char* wanted_element() {
    if constexpr (std::is_same_v<T, bool>) {
        return "true or false";
    } else if constexpr (std::is_floating_point_v<T>) {
        return "a number";
    } else if constexpr (std::is_same_v<T, std::int8_t>) {
        return "an integer in [-128, 127]";
    } else if constexpr (std::is_same_v<T, std::uint8_t>) {
        return "an integer in [0, 255]";
    } else if constexpr (std::is_same_v<T, std::int16_t>) {
        return "an integer in [-32768, 32767]";
    } else if constexpr (std::is_same_v<T, std::int32_t>) {
        return "a 32-bit integer";
    } else {
        return "an integer";
    }
}

// An element as a value of type T; false if it is not one (or out of T's range).
template <class T>
bool element_as(const json_number& v, T& out) {
    using k = json_number::kind;
    if constexpr (std::is_same_v<T, bool>) {
        if (v.what != k::boolean) {
            return false;  // and v.b is not the union's member to read
        }
        out = v.b;
        return true;
    } else if constexpr (std::is_floating_point_v<T>) {
        switch (v.what) {
            case k::real:
                out = static_cast<T>(v.d);
                return true;
            case k::int64:
                out = static_cast<T>(v.i);
                return true;
            case k::uint64:
                out = static_cast<T>(v.u);
                return true;
            default:
                return false;
        }
    } else {
        std::int64_t n = 0;
        if (v.what == k::int64) {
            n = v.i;
        } else if (v.what == k::uint64 &&
                   v.u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
            n = static_cast<std::int64_t>(v.u);
        } else {
            return false;
        }
        out = static_cast<T>(n);
        return n >= std::numeric_limits<T>::min() && n <= std::numeric_limits<T>::max();
    }
}

// Writes `count` elements as T's into `bytes`; the index of the first that is not one.
template <class T>
std::optional<std::size_t> convert_as(const json_number* values, std::size_t count,
                                      std::string& bytes) {
    bytes.resize(count * sizeof(T));
    char* out = bytes.data();
    for (std::size_t i = 0; i < count; ++i) {
        T value;
        if (!element_as(values[i], value)) {
            return i;
        }
        std::memcpy(out + i * sizeof(T), &value, sizeof(T));
    }
    return std::nullopt;
}

// The elements of input `name` as a tensor's bytes of `type`: an error naming the first that
// is not one.
std::optional<std::string> convert(dtype type, const json_number* values, std::size_t count,
                                   std::string& bytes, const std::string& name) {
    std::optional<std::size_t> bad;
    const char* wanted = "";
    const bool carried = with_element_type(type, [&](auto element) {
        using T = typename decltype(element)::type;
        bad = convert_as<T>(values, count, bytes);
        wanted = wanted_element<T>();
    });
    if (!carried) {
        return "input '" + name +
               "' is FP16 or BF16, which JSON data cannot carry; send it as binary data";
    }
    if (bad) {
        return "element " + std::to_string(*bad) + " of input '" + name + "' is not " + wanted;
    }
    return std::nullopt;
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

// Triton's classification extension: the top `k` classes of each row of `t` ([classes] or
// [rows, classes]) as "score:index:label" strings (":label" only where the config names the
// classes), the best first (ties: the lower index first); an error if `t` cannot be classified.
std::optional<std::string> append_classification(std::string& out, const tensor_spec& spec,
                                                 const tensor& t, std::size_t k) {
    if (t.shape.empty() || t.shape.size() > 2 || t.shape.back() < 1) {
        return "output '" + spec.name + "' has shape " + format_shape(t.shape) +
               ": a classification needs [classes] or [batch, classes]";
    }
    const auto classes = static_cast<std::size_t>(t.shape.back());
    const auto rows = t.shape.size() == 2 ? static_cast<std::size_t>(t.shape[0]) : 1;
    k = std::min(k, classes);
    out += ",\"datatype\":\"BYTES\",\"shape\":[";
    if (t.shape.size() == 2) {
        append_number(out, rows);
        out += ',';
    }
    append_number(out, k);
    out += "],\"data\":[";
    std::vector<std::size_t> order(classes);
    const bool carried = with_element_type(t.type, [&](auto element) {
        using T = typename decltype(element)::type;
        using stored = std::conditional_t<std::is_same_v<T, bool>, std::uint8_t, T>;
        for (std::size_t r = 0; r < rows; ++r) {
            const auto value = [&](std::size_t c) { return get<stored>(t.data, r * classes + c); };
            for (std::size_t c = 0; c < classes; ++c) {
                order[c] = c;
            }
            std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k),
                              order.end(), [&](std::size_t a, std::size_t b) {
                                  return value(a) > value(b) || (value(a) == value(b) && a < b);
                              });
            for (std::size_t i = 0; i < k; ++i) {
                std::string entry;
                append_number(entry, value(order[i]));
                entry += ':';
                append_number(entry, order[i]);
                if (order[i] < spec.labels.size()) {
                    entry += ':';
                    entry += spec.labels[order[i]];
                }
                out += r == 0 && i == 0 ? "" : ",";
                append_string(out, entry);
            }
        }
    });
    if (!carried) {
        return "output '" + spec.name + "' is FP16 or BF16, which this server cannot classify yet";
    }
    out += "]}";
    return std::nullopt;
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
    std::string_view body, const model_config& model, std::optional<std::size_t> header_length,
    json_reading reading) {
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
    request_document document(&memory);
    if (const auto ec = read_request_document(body, document, reading)) {
        return bad("the request body is not valid JSON: " + ec.message());
    }
    const json::value& v = document.dom;
    const auto& numbers = document.numbers;
    const auto& runs = document.runs;
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
        for (const auto& d : shape->as_array()) {
            if (!d.is_int64() || d.as_int64() < 0) {
                return bad("the shape of input '" + spec.name + "' must hold sizes >= 0");
            }
            dims.push_back(d.as_int64());
        }
        const auto elements = element_count(dims);
        if (!elements) {
            return http_error{413, "input '" + spec.name + "' is too large: shape " +
                                       format_shape(dims) + " holds more than " +
                                       std::to_string(max_input_elements) + " elements"};
        }
        if (auto problem = check_shape(spec, dims, model.name); !problem.empty()) {
            return bad(problem);
        }
        if (bytes_of[at]) {
            const std::size_t want = *elements * element_size(spec.type);
            if (bytes_of[at]->size() != want) {
                return bad("input '" + spec.name + "' has shape " + format_shape(dims) + " of " +
                           std::string(oip_datatype(spec.type)) + ", which takes " +
                           std::to_string(want) + " bytes, but its binary data has " +
                           std::to_string(bytes_of[at]->size()));
            }
            if (spec.type == dtype::boolean) {
                // A bool is one byte, 0 or 1; any other byte is no value a model can take.
                const auto bad_byte = bytes_of[at]->find_first_not_of(std::string_view("\0\1", 2));
                if (bad_byte != std::string_view::npos) {
                    return bad(
                        "element " + std::to_string(bad_byte) + " of input '" + spec.name +
                        "' (BOOL binary data) is byte " +
                        std::to_string(static_cast<unsigned char>((*bytes_of[at])[bad_byte])) +
                        ", not 0 or 1");
                }
            }
            req.inputs.emplace_back(spec.type, dims, std::string(*bytes_of[at]));
            continue;
        }
        // The parser replaced "data" by the index of its run of numbers.
        const auto& run = runs[static_cast<std::size_t>(data->as_int64())];
        const std::size_t count = run.end - run.begin;
        if (count != *elements) {
            return bad("input '" + spec.name + "' has shape " + format_shape(dims) +
                       ", which holds " + std::to_string(*elements) +
                       " elements, but its data has " + std::to_string(count));
        }
        tensor value(spec.type, dims);
        if (auto problem =
                convert(spec.type, numbers.data() + run.begin, count, value.data, spec.name)) {
            return bad(*problem);
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
            // Not `is_string() ? as_string() : ""`: that makes a temporary json::string, and
            // the view would outlive it (AddressSanitizer: stack-use-after-scope).
            std::string_view kind;
            if (f->is_string()) {
                kind = f->as_string();
            }
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
                if (const auto* k = p->as_object().if_contains("classification")) {
                    if (!k->is_int64() || k->as_int64() < 1) {
                        return bad("parameters.classification of output '" +
                                   std::string(name->as_string()) +
                                   "' must be a whole number of classes >= 1");
                    }
                    req.classifications.emplace_back(name->as_string(),
                                                     static_cast<std::size_t>(k->as_int64()));
                }
                if (const auto* b = p->as_object().if_contains("binary_data")) {
                    if (!b->is_bool()) {
                        return bad("parameters.binary_data of output '" +
                                   std::string(name->as_string()) + "' must be true or false");
                    }
                    (b->as_bool() ? req.binary_output_names : req.json_output_names)
                        .emplace_back(name->as_string());
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
    if (request.id) {
        text += ",\"id\":";
        append_string(text, *request.id);
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
        if (const auto k =
                std::find_if(request.classifications.begin(), request.classifications.end(),
                             [&](const auto& c) { return c.first == spec.name; });
            k != request.classifications.end()) {
            text += first ? "{\"name\":" : ",{\"name\":";
            first = false;
            append_string(text, spec.name);
            if (auto problem = append_classification(text, spec, t, k->second)) {
                return http_error{400, *problem};
            }
            continue;
        }
        const auto named = [&](const std::vector<std::string>& names) {
            return std::find(names.begin(), names.end(), spec.name) != names.end();
        };
        const bool as_binary = (request.binary_outputs && !named(request.json_output_names)) ||
                               named(request.binary_output_names);
        if (!as_binary && !with_element_type(t.type, [](auto) {})) {
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
        const auto count = element_count(t.shape, std::numeric_limits<std::uint64_t>::max() / 8);
        const std::size_t elements = count ? *count : 0;
        if (!count || t.data.size() != elements * element_size(t.type)) {
            return http_error{500, "output '" + spec.name + "' has " +
                                       std::to_string(t.data.size()) + " bytes for shape " +
                                       format_shape(t.shape)};
        }
        text += ",\"data\":[";
        with_element_type(t.type, [&](auto element) {  // carried: checked above
            append_data<typename decltype(element)::type>(text, t.data, elements);
        });
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
    return json::serialize(json::object{{"name", "torchpool"},
                                        {"version", "0.1"},
                                        {"extensions", json::array{"binary_tensor_data"}}});
}

std::string model_ready_json(const model_config& model, bool ready) {
    return json::serialize(json::object{{"name", model.name}, {"ready", ready}});
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
