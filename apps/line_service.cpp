// torchpool-line-service: an existing Asio service that embeds a pool, as the
// documentation of embedding.
//
// The service is what a host already has before it meets torchpool: a TCP server speaking
// a line protocol, on an io_context run by several threads, with its own timers (an idle
// timeout per connection, a status line every few seconds) and its own signal handling.
// The pool joins it without taking anything over: it runs on a strand of the service's
// io_context, owns no thread and installs no signal handler; connections submit tasks
// from their own strands, with coroutines; io threads may come and go.
//
// Protocol: one request per line, "METHOD ARGUMENT" (the primes worker's methods:
// "count_primes 1000000", "segfault x"); one answer per line, "ok RESULT" or
// "error KIND: WHAT HAPPENED".
#include <torchpool/pool.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <istream>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

constexpr auto tuple = asio::as_tuple(asio::use_awaitable);

struct options {
    unsigned short port = 7070;
    std::size_t workers = 4;
    unsigned threads = 4;
    std::chrono::seconds idle_timeout{30};
};

std::atomic<std::uint64_t> answered{0};

// One connection, on its own strand: read a line, submit it, write the answer.
asio::awaitable<void> serve(tcp::socket socket, torchpool::pool& pool,
                            std::chrono::seconds idle_timeout) {
    asio::steady_timer idle(socket.get_executor());
    asio::streambuf input;
    for (;;) {
        // The service's own timer: a client that says nothing for too long is dropped.
        idle.expires_after(idle_timeout);
        idle.async_wait([&socket](boost::system::error_code ec) {
            if (!ec) {
                socket.close();
            }
        });
        auto [ec, n] = co_await asio::async_read_until(socket, input, '\n', tuple);
        idle.cancel();
        if (ec) {
            co_return;  // the client left, or was idle too long
        }
        std::string line(asio::buffers_begin(input.data()),
                         asio::buffers_begin(input.data()) + static_cast<std::ptrdiff_t>(n));
        input.consume(n);
        while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
            line.pop_back();
        }
        const auto space = line.find(' ');
        torchpool::request request(line.substr(0, space),
                                   space == std::string::npos ? "" : line.substr(space + 1));
        auto [error, result] = co_await pool.async_submit(std::move(request), tuple);
        std::string answer =
            error ? "error " + error.message() + ": " + result.diagnostics.summary + "\n"
                  : "ok " + result.payload + "\n";
        ++answered;
        auto [write_error, written] =
            co_await asio::async_write(socket, asio::buffer(answer), tuple);
        if (write_error) {
            co_return;
        }
    }
}

asio::awaitable<void> accept(tcp::acceptor& acceptor, torchpool::pool& pool,
                             std::chrono::seconds idle_timeout) {
    for (;;) {
        // Each connection gets a strand of its own on the shared io_context.
        auto [ec, socket] =
            co_await acceptor.async_accept(asio::make_strand(acceptor.get_executor()), tuple);
        if (ec) {
            co_return;  // closed: the service is stopping
        }
        auto ex = socket.get_executor();
        asio::co_spawn(ex, serve(std::move(socket), pool, idle_timeout), asio::detached);
    }
}

// The service's other timer: a status line every few seconds, on its own strand.
asio::awaitable<void> report_status(asio::steady_timer& timer, torchpool::pool& pool) {
    for (;;) {
        timer.expires_after(5s);
        if (auto [ec] = co_await timer.async_wait(tuple); ec) {
            co_return;
        }
        // stats() is read on the pool's executor.
        co_await asio::post(pool.get_executor(), asio::use_awaitable);
        const auto s = pool.stats();
        std::printf(
            "status: %llu answered, %zu workers idle, %zu busy, %zu starting, %llu "
            "restarts\n",
            static_cast<unsigned long long>(answered.load()), s.workers_idle, s.workers_busy,
            s.workers_starting, static_cast<unsigned long long>(s.restarts));
        std::fflush(stdout);
    }
}

void usage(const char* argv0) {
    std::printf(
        "Usage: %s [--port P] [--workers N] [--threads T] [--idle-timeout S]\n\n"
        "A TCP line service on an io_context run by T threads that embeds a torchpool pool of\n"
        "N prime-counting workers (torchpool-primes-worker, next to this program). Send\n"
        "lines such as \"count_primes 1000000\"; each is answered with \"ok RESULT\" or\n"
        "\"error KIND: WHAT HAPPENED\". SIGINT or SIGTERM stops it: no new connection, the\n"
        "pool finishes what it has, and it exits 0.\n\n"
        "  --port P          TCP port on 127.0.0.1 (default 7070; 0 picks a free one)\n"
        "  --workers N       worker processes (default 4)\n"
        "  --threads T       threads running the io_context (default 4)\n"
        "  --idle-timeout S  seconds a connection may stay silent (default 30)\n",
        argv0);
}

bool parse(int argc, char** argv, options& opt) {
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--help" || arg == "-h" || i + 1 >= argc) {
            return false;
        }
        const long value = std::atol(argv[++i]);
        if (arg == "--port" && value >= 0 && value < 65536) {
            opt.port = static_cast<unsigned short>(value);
        } else if (arg == "--workers" && value > 0) {
            opt.workers = static_cast<std::size_t>(value);
        } else if (arg == "--threads" && value > 0) {
            opt.threads = static_cast<unsigned>(value);
        } else if (arg == "--idle-timeout" && value > 0) {
            opt.idle_timeout = std::chrono::seconds(value);
        } else {
            std::fprintf(stderr, "%s: invalid option or value: %s %s\n", argv[0], arg.c_str(),
                         argv[i]);
            return false;
        }
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    options opt;
    if (!parse(argc, argv, opt)) {
        usage(argv[0]);
        return 2;
    }
    const auto worker =
        std::filesystem::canonical("/proc/self/exe").parent_path() / "torchpool-primes-worker";

    asio::io_context io(static_cast<int>(opt.threads));
    // The pool: on a strand of the service's io_context.
    torchpool::pool pool(asio::make_strand(io),
                         {.worker = {.executable = worker.string()},
                          .workers = opt.workers,
                          .on_worker_event = [](const torchpool::worker_event& e) {
                              if (e.what != torchpool::worker_event::kind::started &&
                                  e.what != torchpool::worker_event::kind::ready) {
                                  std::printf("pool: %s\n", e.description.c_str());
                              }
                          }});
    pool.async_run([](boost::system::error_code) { std::printf("pool: stopped\n"); });

    tcp::acceptor acceptor(asio::make_strand(io), {asio::ip::make_address("127.0.0.1"), opt.port});
    asio::co_spawn(acceptor.get_executor(), accept(acceptor, pool, opt.idle_timeout),
                   asio::detached);
    asio::steady_timer status_timer(asio::make_strand(io));
    asio::co_spawn(status_timer.get_executor(), report_status(status_timer, pool), asio::detached);

    // The host's own signal handling, not the pool's.
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](boost::system::error_code, int signo) {
        std::printf("%s: stopping\n", signo == SIGINT ? "SIGINT" : "SIGTERM");
        asio::post(acceptor.get_executor(), [&] { acceptor.close(); });
        asio::post(status_timer.get_executor(), [&] { status_timer.cancel(); });
        pool.async_shutdown([&](boost::system::error_code) { io.stop(); });
    });

    std::printf("listening on 127.0.0.1:%u with %zu workers and %u threads\n",
                acceptor.local_endpoint().port(), opt.workers, opt.threads);
    std::printf("try: printf 'count_primes 1000000\\n' | nc -q 2 127.0.0.1 %u\n",
                acceptor.local_endpoint().port());
    std::fflush(stdout);

    std::vector<std::thread> threads;
    for (unsigned i = 0; i < opt.threads; ++i) {
        threads.emplace_back([&io] { io.run(); });
    }
    for (auto& t : threads) {
        t.join();
    }
    return 0;
}
