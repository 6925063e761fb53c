// The infer response, written straight to text rather than built as a DOM and serialized: it
// is on every request's path. JSON tensors, Triton's binary tensors and its classifications.
#include "oip.hpp"
#include "tensor_elements.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

namespace torchpool::serve {

namespace {

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
void append_data(std::string& out, std::string_view bytes, std::size_t elements) {
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
            const auto value = [&](std::size_t c) {
                return get<stored>(t.chars(), r * classes + c);
            };
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

// An output's name, datatype and shape, opening its object in the "outputs" list.
void append_output_head(std::string& text, bool& first, const std::string& name, const tensor& t) {
    text += first ? "{\"name\":" : ",{\"name\":";
    first = false;
    append_string(text, name);
    text += ",\"datatype\":";
    append_string(text, oip_datatype(t.type));
    text += ",\"shape\":";
    append_shape(text, t.shape);
}

}  // namespace

std::variant<encoded_response, http_error> infer_response(const model_config& model,
                                                          const infer_request& request,
                                                          const std::vector<tensor>& results,
                                                          std::size_t batch_rows) {
    std::vector<const tensor*> binary;  // the binary outputs, in order
    std::size_t binary_bytes = 0;
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
        if (const auto r =
                std::find_if(request.output_regions.begin(), request.output_regions.end(),
                             [&](const auto& o) { return o.name == spec.name; });
            r != request.output_regions.end()) {
            // Written into the client's region; the response says where and how much.
            const auto bytes = t.bytes();
            const std::string what = "output '" + spec.name + "'";
            if (bytes.size() > r->byte_size) {
                return http_error{400, what + " has " + std::to_string(bytes.size()) +
                                           " bytes, more than its parameters." +
                                           "shared_memory_byte_size of " +
                                           std::to_string(r->byte_size)};
            }
            if (auto wrong = r->region->write(r->offset, bytes, what)) {
                return http_error{400, *wrong};
            }
            append_output_head(text, first, spec.name, t);
            text += ",\"parameters\":{\"shared_memory_region\":";
            append_string(text, r->region->name());
            text += ",\"shared_memory_offset\":";
            append_number(text, r->offset);
            text += ",\"shared_memory_byte_size\":";
            append_number(text, bytes.size());
            text += "}}";
            continue;
        }
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
        append_output_head(text, first, spec.name, t);
        if (as_binary) {
            text += ",\"parameters\":{\"binary_data_size\":";
            append_number(text, t.bytes().size());
            text += "}}";
            binary.push_back(&t);
            binary_bytes += t.bytes().size();
            continue;
        }
        const auto count = element_count(t.shape, std::numeric_limits<std::uint64_t>::max() / 8);
        const std::size_t elements = count ? *count : 0;
        if (!count || t.bytes().size() != elements * element_size(t.type)) {
            return http_error{500, "output '" + spec.name + "' has " +
                                       std::to_string(t.bytes().size()) + " bytes for shape " +
                                       format_shape(t.shape)};
        }
        text += ",\"data\":[";
        with_element_type(t.type, [&](auto element) {  // carried: checked above
            append_data<typename decltype(element)::type>(text, t.chars(), elements);
        });
        text += "]}";
    }
    text += "]}";
    encoded_response out{std::move(text), std::nullopt, {}};
    if (!binary.empty() || request.binary_outputs || !request.binary_output_names.empty()) {
        out.header_length = out.body.size();
        if (binary_bytes >= attach_binary_from) {
            for (const auto* t : binary) {
                out.attachments.push_back(*t);  // shared bytes: a reference, not a copy
            }
        } else {
            out.body.reserve(out.body.size() + binary_bytes);
            for (const auto* t : binary) {
                out.body += t->chars();
            }
        }
    }
    return out;
}

}  // namespace torchpool::serve
