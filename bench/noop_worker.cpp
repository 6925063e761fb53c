// The worker the benchmarks start: one method, "noop", that replies at once.
#include <torchpool/worker.hpp>

int main() {
    torchpool::worker::server server;
    server.handle("noop",
                  [](const torchpool::worker::call&) { return torchpool::worker::result{}; });
    return server.serve();
}
