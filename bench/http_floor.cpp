// The floor of bench/serve_load.sh: a minimal HTTP/1.1 server of the same design as
// torchpool-serve (Beast, Asio, one thread, keep-alive), with no model, no pool, no JSON. It
// reads each request whole, body included, and answers a canned response of the size the
// server would send. Under the same client in the same run, its requests/s is the most any
// server of this design can do on this machine; the server's rate is reported against it.
//
// Usage: torchpool-bench-http-floor RESPONSE_FILE [--port P] [--threads N]
//   Prints "listening on http://127.0.0.1:PORT" once it accepts connections, as the server
//   does; runs until SIGTERM or SIGINT.
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

class session : public std::enable_shared_from_this<session> {
public:
    session(tcp::socket socket, const std::string& canned)
        : stream_(std::move(socket)), canned_(canned) {}

    void start() { read(); }

private:
    void read() {
        parser_.emplace();
        parser_->body_limit(16 << 20);
        http::async_read(stream_, buffer_, *parser_,
                         [self = shared_from_this()](beast::error_code ec, std::size_t) {
                             if (!ec) {
                                 self->answer();
                             }
                         });
    }

    void answer() {
        const auto& req = parser_->get();
        response_ = {};
        response_.version(req.version());
        response_.result(http::status::ok);
        response_.set(http::field::content_type, "application/json");
        response_.keep_alive(req.keep_alive());
        response_.body() = canned_;
        response_.prepare_payload();
        http::async_write(stream_, response_,
                          [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (!ec && self->response_.keep_alive()) {
                                  self->read();
                              }
                          });
    }

    beast::tcp_stream stream_;
    const std::string& canned_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    http::response<http::string_body> response_;
};

void accept(tcp::acceptor& acceptor, const std::string& canned) {
    acceptor.async_accept(asio::make_strand(acceptor.get_executor()),
                          [&acceptor, &canned](beast::error_code ec, tcp::socket socket) {
                              if (ec) {
                                  return;
                              }
                              socket.set_option(tcp::no_delay(true));
                              std::make_shared<session>(std::move(socket), canned)->start();
                              accept(acceptor, canned);
                          });
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || std::string(argv[1]) == "--help") {
        std::fprintf(
            stderr,
            "Usage: %s RESPONSE_FILE [--port P] [--threads N]\n"
            "A minimal HTTP/1.1 server (Beast, keep-alive) that reads each request whole\n"
            "and answers with the bytes of RESPONSE_FILE: the floor that bench/serve_load.sh\n"
            "measures torchpool-serve against. Prints \"listening on URL\" when ready.\n",
            argv[0]);
        return argc < 2 ? 64 : 0;
    }
    std::ifstream file(argv[1], std::ios::binary);
    if (!file) {
        std::fprintf(stderr, "http_floor: cannot read %s\n", argv[1]);
        return 66;
    }
    const std::string canned{std::istreambuf_iterator<char>(file), {}};
    unsigned short port = 0;
    int threads = 1;
    for (int i = 2; i + 1 < argc; i += 2) {
        const std::string option = argv[i];
        if (option == "--port") {
            port = static_cast<unsigned short>(std::atoi(argv[i + 1]));
        } else if (option == "--threads") {
            threads = std::max(1, std::atoi(argv[i + 1]));
        } else {
            std::fprintf(stderr, "http_floor: unknown option %s\n", option.c_str());
            return 64;
        }
    }
    asio::io_context io{threads};
    tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), port});
    std::printf("listening on http://127.0.0.1:%u\n", acceptor.local_endpoint().port());
    std::fflush(stdout);
    asio::signal_set signals(io, SIGTERM, SIGINT);
    signals.async_wait([&](beast::error_code, int) { io.stop(); });
    accept(acceptor, canned);
    std::vector<std::thread> more;
    for (int i = 1; i < threads; ++i) {
        more.emplace_back([&io] { io.run(); });
    }
    io.run();
    for (auto& t : more) {
        t.join();
    }
    return 0;
}
