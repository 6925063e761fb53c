// Runs one task through a pool of the consumer's own worker; exits 0 if it came back.
#include <torchpool/pool.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstdio>
#include <string>

namespace asio = boost::asio;

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s WORKER\n", argv[0]);
        return 2;
    }
    asio::io_context io;
    torchpool::pool pool(io.get_executor(), {.worker = {.executable = argv[1]}, .workers = 1});
    pool.async_run(asio::detached);
    bool ok = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            torchpool::request req("echo", "installed");
            auto [ec, r] = co_await pool.async_submit(req, asio::as_tuple(asio::use_awaitable));
            ok = !ec && r.payload == "installed";
            std::printf("consumer: %s\n", ec ? r.diagnostics.summary.c_str() : r.payload.c_str());
            co_await pool.async_shutdown(asio::use_awaitable);
        },
        asio::detached);
    io.run();
    return ok ? 0 : 1;
}
