#include "oip.hpp"

#include <boost/json.hpp>

namespace torchpool::serve {

namespace json = boost::json;

namespace {

json::object spec_json(const tensor_spec& s) {
    json::array shape;
    for (const auto d : s.shape) {
        shape.push_back(d);
    }
    return {{"name", s.name}, {"datatype", oip_datatype(s.type)}, {"shape", std::move(shape)}};
}

}  // namespace

std::string error_json(std::string_view message) {
    return json::serialize(json::object{{"error", message}});
}

std::string server_metadata_json(bool shared_memory) {
    json::array extensions{"binary_tensor_data", "classification"};
    if (shared_memory) {
        extensions.emplace_back("system_shared_memory");
    }
    return json::serialize(json::object{
        {"name", "torchpool"}, {"version", "0.1"}, {"extensions", std::move(extensions)}});
}

std::string shm_status_json(const std::vector<std::shared_ptr<const shm_region>>& regions) {
    json::array out;
    for (const auto& r : regions) {
        out.push_back(json::object{{"name", r->name()},
                                   {"key", r->key()},
                                   {"offset", r->offset()},
                                   {"byte_size", r->byte_size()}});
    }
    return json::serialize(out);
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
