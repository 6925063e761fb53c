// The worker the benchmarks start: "noop" replies at once, "block" never replies (the
// benchmark kills it).
#include <torchpool/worker.hpp>

#include <unistd.h>

int main() {
    torchpool::worker::server server;
    server.handle("noop",
                  [](const torchpool::worker::call&) { return torchpool::worker::result{}; });
    server.handle("block", [](const torchpool::worker::call&) -> torchpool::worker::result {
        for (;;) {
            ::pause();
        }
    });
    return server.serve();
}
