#include "model_config.hpp"

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace torchpool::serve {

namespace json = boost::json;

namespace {

struct datatype_name {
    dtype type;
    std::string_view name;
};

constexpr datatype_name datatypes[] = {
    {dtype::boolean, "BOOL"},  {dtype::uint8, "UINT8"},  {dtype::int8, "INT8"},
    {dtype::int16, "INT16"},   {dtype::int32, "INT32"},  {dtype::int64, "INT64"},
    {dtype::float16, "FP16"},  {dtype::float32, "FP32"}, {dtype::float64, "FP64"},
    {dtype::bfloat16, "BF16"},
};

tensor_spec parse_spec(const json::value& v, const std::string& where) {
    const auto* o = v.if_object();
    if (!o) {
        throw std::runtime_error(where + ": each input and output must be an object");
    }
    tensor_spec spec;
    const auto* name = o->if_contains("name");
    const auto* type = o->if_contains("datatype");
    const auto* shape = o->if_contains("shape");
    if (!name || !name->is_string() || !type || !type->is_string() || !shape ||
        !shape->is_array()) {
        throw std::runtime_error(where +
                                 ": each input and output needs \"name\" (text), \"datatype\" "
                                 "(text) and \"shape\" (a list of sizes, -1 for any)");
    }
    spec.name = std::string(name->as_string());
    const auto t = from_oip_datatype(type->as_string());
    if (!t) {
        throw std::runtime_error(where + ": unknown datatype \"" + std::string(type->as_string()) +
                                 "\" of " + spec.name);
    }
    spec.type = *t;
    for (const auto& d : shape->as_array()) {
        if (!d.is_int64() || d.as_int64() < -1 || d.as_int64() == 0) {
            throw std::runtime_error(where + ": the shape of " + spec.name +
                                     " must hold positive sizes or -1");
        }
        spec.shape.push_back(d.as_int64());
    }
    if (const auto* labels = o->if_contains("labels")) {
        if (!labels->is_array()) {
            throw std::runtime_error(where + ": the labels of " + spec.name +
                                     " must be a list of class names");
        }
        for (const auto& l : labels->as_array()) {
            if (!l.is_string()) {
                throw std::runtime_error(where + ": the labels of " + spec.name +
                                         " must be a list of class names");
            }
            spec.labels.emplace_back(l.as_string());
        }
    }
    return spec;
}

}  // namespace

std::string_view oip_datatype(dtype t) noexcept {
    for (const auto& d : datatypes) {
        if (d.type == t) {
            return d.name;
        }
    }
    return "UNKNOWN";
}

std::optional<dtype> from_oip_datatype(std::string_view name) noexcept {
    for (const auto& d : datatypes) {
        if (d.name == name) {
            return d.type;
        }
    }
    return std::nullopt;
}

std::string format_shape(const std::vector<std::int64_t>& shape) {
    std::string text = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        text += (i ? ", " : "") + std::to_string(shape[i]);
    }
    return text + "]";
}

std::string check_shape(const tensor_spec& spec, const std::vector<std::int64_t>& shape,
                        const std::string& model) {
    bool fits = shape.size() == spec.shape.size();
    for (std::size_t i = 0; fits && i < shape.size(); ++i) {
        fits = spec.shape[i] == -1 || spec.shape[i] == shape[i];
    }
    if (fits) {
        return {};
    }
    return "input '" + spec.name + "' has shape " + format_shape(shape) + ", but model '" + model +
           "' wants " + format_shape(spec.shape) + " (-1: any size)";
}

bool keeps_batch_dimension(const model_config& model) noexcept {
    for (const auto* list : {&model.inputs, &model.outputs}) {
        for (const auto& spec : *list) {
            if (spec.shape.empty() || spec.shape[0] != -1) {
                return false;
            }
        }
    }
    return true;
}

std::optional<std::uint64_t> element_count(const std::vector<std::int64_t>& shape,
                                           std::uint64_t limit) {
    std::uint64_t elements = 1;
    for (const auto d : shape) {
        if (d == 0) {
            return 0;  // whatever follows: and [0, 2^62] is no overflow
        }
    }
    for (const auto d : shape) {
        const auto size = static_cast<std::uint64_t>(d);
        if (d < 0 || size > limit / elements) {
            return std::nullopt;
        }
        elements *= size;
    }
    return elements;
}

model_config parse_model_config(std::string name, std::string path, std::string_view text,
                                const std::string& where) {
    boost::system::error_code ec;
    const json::value v = json::parse(text, ec);
    if (ec) {
        throw std::runtime_error(where + " is not valid JSON: " + ec.message());
    }
    const auto* o = v.if_object();
    if (!o) {
        throw std::runtime_error(where + " must hold a JSON object");
    }
    model_config config{.name = std::move(name), .path = std::move(path)};
    if (const auto* m = o->if_contains("method")) {
        if (!m->is_string()) {
            throw std::runtime_error(where + ": \"method\" must be text");
        }
        config.method = std::string(m->as_string());
    }
    if (const auto* version = o->if_contains("version")) {
        if (!version->is_string()) {
            throw std::runtime_error(where + ": \"version\" must be text");
        }
        config.version = std::string(version->as_string());
    }
    for (const char* key : {"inputs", "outputs"}) {
        const auto* list = o->if_contains(key);
        if (!list || !list->is_array() || list->as_array().empty()) {
            throw std::runtime_error(where + ": \"" + key + "\" must list the model's " + key);
        }
        auto& into = std::string_view(key) == "inputs" ? config.inputs : config.outputs;
        for (const auto& spec : list->as_array()) {
            into.push_back(parse_spec(spec, where));
            for (std::size_t i = 0; i + 1 < into.size(); ++i) {
                if (into[i].name == into.back().name) {
                    throw std::runtime_error(where + ": two " + key + " are named '" +
                                             into.back().name + "'");
                }
            }
        }
    }
    return config;
}

model_config load_model_config(std::string name, const std::string& path) {
    auto config_path = std::filesystem::path(path).replace_extension(".json");
    std::ifstream in(config_path);
    if (!in) {
        throw std::runtime_error("model '" + name + "': cannot read " + config_path.string() +
                                 ", the file beside " + path +
                                 " that names its inputs and outputs (see apps/serve/"
                                 "model_config.hpp for its format)");
    }
    std::stringstream text;
    text << in.rdbuf();
    return parse_model_config(std::move(name), path, text.str(), config_path.string());
}

}  // namespace torchpool::serve
