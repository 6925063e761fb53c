// Reading the JSON of an infer request (sans-io). Nearly all of such a request is the numbers
// of its inputs' "data" (784 of them for one Fashion-MNIST image), and a JSON value each,
// built and freed, cost more than the model's forward. So those numbers go into one flat
// list, and only the rest of the request becomes a (small) Boost.JSON DOM.
//
// Two ways to get there, with the same result:
// - the fast path: a scan of the text finds each root.inputs[i].data; an array of plain
//   numbers there is read by a strict JSON number reader, and the rest of the text, each such
//   array replaced by its index, is parsed by Boost.JSON. Anything unusual (an escaped key on
//   the way, data that is not an array of numbers, a number the reader leaves to a full
//   parser) sends the request to
// - the streaming path: Boost.JSON's SAX parser (basic_parser) over the whole text, whose
//   handler captures the data's elements, numbers or not, as they come.
#pragma once

#include "json_number.hpp"

#include <boost/json/storage_ptr.hpp>
#include <boost/json/value.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <string_view>
#include <vector>

namespace torchpool::serve {

struct request_document {
    /// `storage`: where the DOM lives (a monotonic resource makes freeing it one step).
    explicit request_document(boost::json::storage_ptr storage = {}) : dom(std::move(storage)) {}

    /// The request, each root.inputs[i].data replaced by the index of its run (an integer).
    boost::json::value dom;
    /// The elements of every data, in order; run k is numbers[runs[k].begin, runs[k].end).
    std::vector<json_number> numbers;
    struct run {
        std::size_t begin, end;
    };
    std::vector<run> runs;
    /// Read by the fast path (for tests).
    bool fast = false;
};

enum class json_reading { fast_when_possible, streaming_only };

/// Reads `text` into `out` (its DOM in the storage `out.dom` has); an error if it is not JSON.
boost::system::error_code read_request_document(
    std::string_view text, request_document& out,
    json_reading how = json_reading::fast_when_possible);

}  // namespace torchpool::serve
