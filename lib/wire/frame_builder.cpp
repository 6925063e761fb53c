#include "frame_builder.hpp"

#include <cstring>

namespace torchpool::wire {

frame flatten(kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments,
              std::span<const std::span<const std::byte>> referred) {
    const std::size_t table = table_words(segments.size());
    std::size_t words = table;
    for (const auto& segment : segments) {
        words += segment.size();
    }
    auto out = kj::heapArray<capnp::word>(words);
    auto* const start = reinterpret_cast<unsigned char*>(out.begin());
    std::memset(start, 0, words * sizeof(capnp::word));
    const auto put = [start](std::size_t index, std::size_t value) {
        const auto v = static_cast<std::uint32_t>(value);
        std::memcpy(start + index * sizeof v, &v, sizeof v);
    };
    put(0, segments.size() - 1);
    auto* at = start + table * sizeof(capnp::word);
    for (std::size_t i = 0; i < segments.size(); ++i) {
        put(i + 1, segments[i].size());
        std::size_t length = segments[i].size() * sizeof(capnp::word);
        for (const auto& r : referred) {
            if (static_cast<const void*>(r.data()) == segments[i].begin()) {
                length = r.size();
            }
        }
        std::memcpy(at, segments[i].begin(), length);
        at += segments[i].size() * sizeof(capnp::word);
    }
    return out;
}

}  // namespace torchpool::wire
