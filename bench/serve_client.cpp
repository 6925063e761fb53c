// A load client for torchpool-serve's benchmarks, where wrk cannot do the job:
//
// - closed loop, a fixed number of requests (--requests N): C connections each send a
//   request, wait for its answer, and send the next, until N have been sent. A fixed count is
//   what an instruction count per request needs (bench/serve_instructions.sh).
// - open loop, a fixed rate (--rate R --seconds S): request i is due at start + i/R, on
//   connection i mod C; a request whose connection is still busy goes as soon as it is free,
//   and its latency counts from when it was due, not from when it went (so a stall is not
//   hidden by the requests it delayed: no coordinated omission). This is how p99 "at half the
//   saturation rate" is measured.
//
// Prints one line: requests, non-200 answers, seconds, rate, latency p50/p90/p99/max, and
// the p99 of how late requests left the client (its own stalls, or a connection still busy
// with the previous answer), which tells the client's share of a bad p99 from the server's.
//
// Usage: torchpool-bench-serve-client URL BODY [--header-length N] [--connections C]
//                                     (--requests N | --rate R --seconds S)
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

namespace {

struct options {
    std::string host = "127.0.0.1";
    std::string port;
    std::string target;
    std::string body;
    long header_length = -1;
    int connections = 8;
    long requests = 0;  // closed loop
    double rate = 0;    // open loop
    double seconds = 0;
};

struct results {
    std::vector<double> latency_ms;
    std::vector<double> late_ms;  // how late each request left the client (its own stalls)
    long failed = 0;              // answered, but not 200
    long broken = 0;              // connection lost
};

[[noreturn]] void usage(const char* self, const char* why) {
    std::fprintf(stderr,
                 "%s: %s\nusage: %s URL BODY [--header-length N] [--connections C] "
                 "(--requests N | --rate R --seconds S)\n",
                 self, why, self);
    std::exit(64);
}

options parse(int argc, char** argv) {
    if (argc < 3) {
        usage(argv[0], "URL and BODY are needed");
    }
    options o;
    std::string url = argv[1];
    const std::string scheme = "http://";
    if (url.rfind(scheme, 0) != 0) {
        usage(argv[0], "the URL must start with http://");
    }
    url = url.substr(scheme.size());
    const auto slash = url.find('/');
    const auto authority = url.substr(0, slash);
    o.target = slash == std::string::npos ? "/" : url.substr(slash);
    const auto colon = authority.rfind(':');
    o.host = authority.substr(0, colon);
    o.port = colon == std::string::npos ? "80" : authority.substr(colon + 1);
    std::ifstream in(argv[2], std::ios::binary);
    if (!in) {
        usage(argv[0], "cannot read BODY");
    }
    std::stringstream text;
    text << in.rdbuf();
    o.body = text.str();
    for (int i = 3; i + 1 < argc; i += 2) {
        const std::string flag = argv[i];
        const char* value = argv[i + 1];
        if (flag == "--header-length") {
            o.header_length = std::atol(value);
        } else if (flag == "--connections") {
            o.connections = std::max(1, std::atoi(value));
        } else if (flag == "--requests") {
            o.requests = std::atol(value);
        } else if (flag == "--rate") {
            o.rate = std::atof(value);
        } else if (flag == "--seconds") {
            o.seconds = std::atof(value);
        } else {
            usage(argv[0], ("unknown option " + flag).c_str());
        }
    }
    if ((o.requests > 0) == (o.rate > 0 && o.seconds > 0)) {
        usage(argv[0], "give either --requests, or --rate and --seconds");
    }
    return o;
}

class client {
public:
    client(asio::io_context& io, const options& o) : io_(io), opt_(o) {
        http::request<http::string_body> req{http::verb::post, o.target, 11};
        req.set(http::field::host, o.host);
        req.set(http::field::content_type,
                o.header_length >= 0 ? "application/octet-stream" : "application/json");
        if (o.header_length >= 0) {
            req.set("Inference-Header-Content-Length", std::to_string(o.header_length));
        }
        req.body() = o.body;
        req.prepare_payload();
        std::ostringstream wire;
        wire << req;
        wire_ = wire.str();
    }

    asio::awaitable<void> connection(int index, tcp::socket socket) {
        boost::beast::flat_buffer buffer;
        asio::steady_timer timer(io_);
        for (long i = index;; i += opt_.connections) {
            clock_type::time_point due;
            if (opt_.requests > 0) {
                if (sent_ >= opt_.requests) {
                    break;
                }
                ++sent_;
                due = clock_type::now();
            } else {
                due =
                    start_ + std::chrono::duration_cast<clock_type::duration>(
                                 std::chrono::duration<double>(static_cast<double>(i) / opt_.rate));
                if (due >= end_) {
                    break;
                }
                if (due > clock_type::now()) {
                    timer.expires_at(due);
                    co_await timer.async_wait(asio::use_awaitable);
                }
            }
            results_.late_ms.push_back(
                std::chrono::duration<double, std::milli>(clock_type::now() - due).count());
            co_await asio::async_write(socket, asio::buffer(wire_), asio::use_awaitable);
            http::response_parser<http::string_body> parser;
            parser.body_limit(64u << 20);
            boost::system::error_code ec;
            co_await http::async_read(socket, buffer, parser,
                                      asio::redirect_error(asio::use_awaitable, ec));
            if (ec) {
                ++results_.broken;
                break;
            }
            results_.latency_ms.push_back(
                std::chrono::duration<double, std::milli>(clock_type::now() - due).count());
            if (parser.get().result() != http::status::ok) {
                ++results_.failed;
            }
        }
    }

    void run() {
        // Every connection is open before the clock starts: connecting is not a request's time.
        const auto endpoints = tcp::resolver(io_).resolve(opt_.host, opt_.port);
        std::vector<tcp::socket> sockets;
        for (int c = 0; c < opt_.connections; ++c) {
            auto& s = sockets.emplace_back(io_);
            asio::connect(s, endpoints);
            s.set_option(tcp::no_delay(true));
        }
        start_ = clock_type::now();
        end_ = start_ + std::chrono::duration_cast<clock_type::duration>(
                            std::chrono::duration<double>(opt_.seconds));
        for (int c = 0; c < opt_.connections; ++c) {
            asio::co_spawn(io_, connection(c, std::move(sockets[c])), [](std::exception_ptr e) {
                if (e) {
                    std::rethrow_exception(e);
                }
            });
        }
        io_.run();
        const double elapsed = std::chrono::duration<double>(clock_type::now() - start_).count();
        auto& l = results_.latency_ms;
        std::sort(l.begin(), l.end());
        std::sort(results_.late_ms.begin(), results_.late_ms.end());
        const auto quantile = [](const std::vector<double>& v, double q) {
            return v.empty() ? 0.0
                             : v[std::min(v.size() - 1, static_cast<std::size_t>(q * v.size()))];
        };
        std::printf(
            "requests %zu non-200 %ld broken %ld seconds %.3f rate %.0f p50_ms %.3f p90_ms %.3f "
            "p99_ms %.3f max_ms %.3f sent_late_p99_ms %.3f\n",
            l.size(), results_.failed, results_.broken, elapsed,
            static_cast<double>(l.size()) / elapsed, quantile(l, 0.50), quantile(l, 0.90),
            quantile(l, 0.99), l.empty() ? 0.0 : l.back(), quantile(results_.late_ms, 0.99));
    }

private:
    asio::io_context& io_;
    const options& opt_;
    std::string wire_;
    long sent_ = 0;
    clock_type::time_point start_;
    clock_type::time_point end_;
    results results_;
};

}  // namespace

int main(int argc, char** argv) {
    const options opt = parse(argc, argv);
    asio::io_context io(1);
    client c(io, opt);
    try {
        c.run();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
        return 1;
    }
    return 0;
}
