// A failed request's HTTP status: what each failure of a pool or the batcher is answered.
#include "status_map.hpp"

#include "reply.hpp"
#include <torchpool/error.hpp>

#include <boost/asio/error.hpp>

#include <catch2/catch.hpp>

using namespace torchpool;
using namespace torchpool::serve;
using boost::beast::http::status;

TEST_CASE("the server cannot take the request now: 503 with Retry-After", "[serve][status]") {
    for (const auto e : {errc::overloaded, errc::spawn_failed, errc::shutting_down}) {
        const auto s = status_of(make_error_code(e));
        CHECK(s.status == status::service_unavailable);
        CHECK(s.retry_after);
    }
}

TEST_CASE("past its deadline: 504, and its client went away: 499", "[serve][status]") {
    CHECK(status_of(make_error_code(errc::timeout)).status == status::gateway_timeout);
    CHECK_FALSE(status_of(make_error_code(errc::timeout)).retry_after);
    CHECK(status_of(boost::asio::error::operation_aborted).status == client_closed_request);
}

TEST_CASE("the model or its worker failed it: 500, not to be sent again at once",
          "[serve][status]") {
    for (const auto e : {errc::worker_died, errc::task_failed, errc::protocol_error,
                         errc::memory_limit, errc::poison_task, errc::invalid_request,
                         errc::frame_too_large, errc::frame_malformed, errc::frame_truncated}) {
        const auto s = status_of(make_error_code(e));
        CHECK(s.status == status::internal_server_error);
        CHECK_FALSE(s.retry_after);
    }
}
