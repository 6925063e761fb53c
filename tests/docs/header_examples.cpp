// The examples in the public headers' comments, compiled and run as they are written
// there: check_header_examples.cmake fails the tests if a header shows code that is not
// in a compiled source (this file or an example of the README). Run with the README's
// worker (which echoes) as argv[1].
#include <torchpool/pool.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstdio>
#include <string>

namespace asio = boost::asio;

int main(int, char** argv) {
    const std::string worker_path = argv[1];
    asio::io_context io;
    torchpool::pool pool{
        io.get_executor(),
        // pool_params.hpp
        torchpool::pool_params{.worker = {.executable = worker_path}, .workers = 8}};
    pool.async_run(asio::detached);

    const std::string bytes = "an example from task.hpp";
    std::string got;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            // task.hpp
            auto result =
                co_await pool.async_submit(torchpool::request("echo", bytes), asio::use_awaitable);
            got = result.payload;
            co_await pool.async_shutdown(asio::use_awaitable);
        },
        asio::detached);
    io.run();
    if (got != bytes) {
        std::printf("the task.hpp example echoed '%s', not '%s'\n", got.c_str(), bytes.c_str());
        return 1;
    }
    std::printf("ok\n");
}
