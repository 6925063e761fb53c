#include "status_map.hpp"

#include "reply.hpp"
#include <torchpool/error.hpp>

#include <boost/asio/error.hpp>

namespace torchpool::serve {

failure_status status_of(const boost::system::error_code& ec) {
    using boost::beast::http::status;
    if (ec == errc::overloaded || ec == errc::spawn_failed || ec == errc::shutting_down) {
        return {status::service_unavailable, true};
    }
    if (ec == errc::timeout) {
        return {status::gateway_timeout};
    }
    if (ec == boost::asio::error::operation_aborted) {
        return {client_closed_request};
    }
    return {status::internal_server_error};
}

}  // namespace torchpool::serve
