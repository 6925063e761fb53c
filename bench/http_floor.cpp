// The floor of bench/serve_load.sh: a minimal HTTP/1.1 server of the same design as
// torchpool-serve (Beast, Asio, one thread, keep-alive), with no model, no pool, no JSON. It
// reads each request whole, body included, and answers a canned response of the size the
// server would send. Under the same client in the same run, its requests/s is the most any
// server of this design can do on this machine; the server's rate is reported against it.
//
// With --hop W, each request also makes the round trip every process-pool server pays: to one
// of W child processes over a pipe and back. Requests that wait when a child is free go to it
// together (up to 32, the server's largest batch), as one 4-byte message that the child echoes
// at once; they are answered when the echo is back. No model, no tensors: the floor of the
// design with worker processes, which torchpool-serve's rate is also reported against.
//
// Usage: torchpool-bench-http-floor RESPONSE_FILE [--port P] [--threads N | --hop W]
//   Prints "listening on http://127.0.0.1:PORT" once it accepts connections, as the server
//   does; runs until SIGTERM or SIGINT.
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// The worker hop (--hop W): W children that echo 4-byte messages, and the requests waiting for
// one. One thread only.
class hop {
public:
    hop(asio::io_context& io, int children) {
        for (int i = 0; i < children; ++i) {
            int to[2], from[2];
            if (::pipe2(to, O_CLOEXEC) != 0 || ::pipe2(from, O_CLOEXEC) != 0) {
                std::perror("http_floor: pipe2");
                std::exit(71);
            }
            const pid_t pid = ::fork();
            if (pid < 0) {
                std::perror("http_floor: fork");
                std::exit(71);
            }
            if (pid == 0) {
                ::prctl(PR_SET_PDEATHSIG, SIGKILL);
                std::uint32_t message;
                while (::read(to[0], &message, sizeof message) == sizeof message &&
                       ::write(from[1], &message, sizeof message) == sizeof message) {
                }
                ::_exit(0);
            }
            ::close(to[0]);
            ::close(from[1]);
            children_.push_back(std::make_unique<child>(io, to[1], from[0]));
        }
    }

    /// `answer` runs once a child has echoed the message that carried this request.
    void await(std::function<void()> answer) {
        waiting_.push_back(std::move(answer));
        dispatch();
    }

private:
    struct child {
        child(asio::io_context& io, int to_fd, int from_fd) : to(io, to_fd), from(io, from_fd) {}
        asio::posix::stream_descriptor to, from;
        bool busy = false;
        std::vector<std::function<void()>> batch;
        std::uint32_t message = 0, echo = 0;
    };

    void dispatch() {
        for (auto& c : children_) {
            if (!c->busy && !waiting_.empty()) {
                send(*c);
            }
        }
    }

    void send(child& c) {
        while (!waiting_.empty() && c.batch.size() < 32) {
            c.batch.push_back(std::move(waiting_.front()));
            waiting_.pop_front();
        }
        c.busy = true;
        c.message = static_cast<std::uint32_t>(c.batch.size());
        asio::async_write(c.to, asio::buffer(&c.message, sizeof c.message),
                          [this, &c](beast::error_code ec, std::size_t) {
                              if (ec) {
                                  return;
                              }
                              asio::async_read(c.from, asio::buffer(&c.echo, sizeof c.echo),
                                               [this, &c](beast::error_code e, std::size_t) {
                                                   if (!e) {
                                                       done(c);
                                                   }
                                               });
                          });
    }

    void done(child& c) {
        auto batch = std::move(c.batch);
        c.batch.clear();
        c.busy = false;
        dispatch();  // the child takes what waits before the answers are written
        for (auto& answer : batch) {
            answer();
        }
    }

    std::vector<std::unique_ptr<child>> children_;
    std::deque<std::function<void()>> waiting_;
};

class session : public std::enable_shared_from_this<session> {
public:
    session(tcp::socket socket, const std::string& canned, hop* workers)
        : stream_(std::move(socket)), canned_(canned), workers_(workers) {}

    void start() { read(); }

private:
    void read() {
        parser_.emplace();
        parser_->body_limit(16 << 20);
        http::async_read(stream_, buffer_, *parser_,
                         [self = shared_from_this()](beast::error_code ec, std::size_t) {
                             if (ec) {
                                 return;
                             }
                             if (self->workers_) {
                                 self->workers_->await([self] { self->answer(); });
                             } else {
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
    hop* workers_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    http::response<http::string_body> response_;
};

void accept(tcp::acceptor& acceptor, const std::string& canned, hop* workers) {
    acceptor.async_accept(
        asio::make_strand(acceptor.get_executor()),
        [&acceptor, &canned, workers](beast::error_code ec, tcp::socket socket) {
            if (ec) {
                return;
            }
            socket.set_option(tcp::no_delay(true));
            std::make_shared<session>(std::move(socket), canned, workers)->start();
            accept(acceptor, canned, workers);
        });
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || std::string(argv[1]) == "--help") {
        std::fprintf(
            stderr,
            "Usage: %s RESPONSE_FILE [--port P] [--threads N | --hop W]\n"
            "A minimal HTTP/1.1 server (Beast, keep-alive) that reads each request whole\n"
            "and answers with the bytes of RESPONSE_FILE: the floor that bench/serve_load.sh\n"
            "measures torchpool-serve against. Prints \"listening on URL\" when ready.\n"
            "--hop W: each request first makes a round trip over a pipe to one of W child\n"
            "processes (requests that wait go together, up to 32), as a pool's would.\n",
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
    int children = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        const std::string option = argv[i];
        if (option == "--port") {
            port = static_cast<unsigned short>(std::atoi(argv[i + 1]));
        } else if (option == "--threads") {
            threads = std::max(1, std::atoi(argv[i + 1]));
        } else if (option == "--hop") {
            children = std::max(1, std::atoi(argv[i + 1]));
        } else {
            std::fprintf(stderr, "http_floor: unknown option %s\n", option.c_str());
            return 64;
        }
    }
    if (children > 0 && threads > 1) {
        std::fprintf(stderr, "http_floor: --hop runs on one thread; leave out --threads\n");
        return 64;
    }
    asio::io_context io{threads};
    // The children are forked before the listening socket exists, so they do not hold it.
    std::optional<hop> workers;
    if (children > 0) {
        workers.emplace(io, children);
    }
    tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), port});
    std::printf("listening on http://127.0.0.1:%u\n", acceptor.local_endpoint().port());
    std::fflush(stdout);
    asio::signal_set signals(io, SIGTERM, SIGINT);
    signals.async_wait([&](beast::error_code, int) { io.stop(); });
    accept(acceptor, canned, workers ? &*workers : nullptr);
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
