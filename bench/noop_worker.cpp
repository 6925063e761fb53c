// The worker the benchmarks start: "noop" replies at once, "block" never replies (the
// benchmark kills it), "sink" takes tensors and answers with nothing, "echo" answers with the
// tensors it was sent (views of the request, copied once into the reply).
#include <torchpool/worker.hpp>

#include <unistd.h>

int main() {
    torchpool::worker::server server;
    server.handle("noop",
                  [](const torchpool::worker::call&) { return torchpool::worker::result{}; });
    server.handle("sink",
                  [](const torchpool::worker::call&) { return torchpool::worker::result{}; });
    server.handle("echo", [](const torchpool::worker::call& c) {
        return torchpool::worker::result{.tensors = {c.tensors.begin(), c.tensors.end()}};
    });
    server.handle("block", [](const torchpool::worker::call&) -> torchpool::worker::result {
        for (;;) {
            ::pause();
        }
    });
    return server.serve();
}
