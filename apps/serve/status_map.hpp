// The HTTP status of a request that failed in a pool or in the batcher. Pure, so that each
// case has a unit test.
#pragma once

#include <boost/beast/http/status.hpp>
#include <boost/system/error_code.hpp>

namespace torchpool::serve {

struct failure_status {
    boost::beast::http::status status;
    bool retry_after = false;  // the client may send it again soon (503)
};

/// 503 with Retry-After when the server cannot take the request now (queue full, workers
/// cannot start, shutting down); 504 past its deadline; 499 when its client went away (the
/// request was cancelled); 500 when the model or its worker failed it.
failure_status status_of(const boost::system::error_code& ec);

}  // namespace torchpool::serve
