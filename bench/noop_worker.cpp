// The worker the benchmarks start: "noop" replies at once, "block" never replies (the
// benchmark kills it), "sink" reads the tensors it is sent in place and answers with nothing,
// "echo" answers with the tensors it was sent (views of the request, copied once: into its
// output memory, or into the reply when small).
#include <torchpool/worker.hpp>

#include <cstdint>
#include <cstring>
#include <string>

#include <unistd.h>

int main() {
    torchpool::worker::server server;
    server.handle("noop",
                  [](const torchpool::worker::call&) { return torchpool::worker::result{}; });
    server.handle("sink", [](const torchpool::worker::call& c) {
        // Reads each input in place, as a model would, and answers with nothing.
        std::uint64_t sum = 0;
        for (const auto& t : c.tensors) {
            for (std::size_t i = 0; i + 8 <= t.data.size(); i += 8) {
                std::uint64_t word;
                std::memcpy(&word, t.data.data() + i, 8);
                sum += word;
            }
        }
        return torchpool::worker::result{.payload = std::to_string(sum & 1)};
    });
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
