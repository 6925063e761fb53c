// Where an infer request's tensors are in shared-memory regions (Triton's system
// shared-memory extension): a tensor's parameters (shared_memory_region, _byte_size and the
// optional _offset) read and checked against the registered regions. Sans-io apart from the
// regions themselves, which read and write their objects (shm_regions.hpp).
#pragma once

#include "oip.hpp"
#include "shm_regions.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace torchpool::serve {

/// What `o` holds under `key` as a byte count: `valid` unless it is there and is not a whole
/// number, 0 or more. For a request's tensors and for a region's registration alike.
struct byte_count {
    bool valid = true;
    std::optional<std::uint64_t> bytes;
};
byte_count byte_count_of(const boost::json::object& o, std::string_view key);

/// The region a tensor's parameters name, checked: registered, and the bytes inside it;
/// nullopt if they name none. `what` names the tensor in errors ("input 'images'");
/// `regions`: null when the server takes none.
std::variant<std::optional<region_bytes>, http_error> region_of(const boost::json::object* tensor,
                                                                const std::string& what,
                                                                const shm_regions* regions);

}  // namespace torchpool::serve
