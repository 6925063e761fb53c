// The worker of the demo (torchpool-demo): counts primes, and can crash on request.
#include <torchpool/worker.hpp>

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace {

std::uint64_t count_primes_below(std::uint64_t n) {
    std::uint64_t count = 0;
    for (std::uint64_t k = 2; k < n; ++k) {
        bool prime = true;
        for (std::uint64_t d = 2; d * d <= k; ++d) {
            if (k % d == 0) {
                prime = false;
                break;
            }
        }
        count += prime;
    }
    return count;
}

}  // namespace

int main() {
    torchpool::worker::server server;
    server.handle("count_primes", [](const torchpool::worker::call& c) {
        const std::string text(c.payload);
        std::size_t used = 0;
        const auto n = std::stoull(text, &used);
        if (used != text.size()) {
            throw std::invalid_argument("payload must be a whole number, got '" + text + "'");
        }
        return torchpool::worker::result{.payload = std::to_string(count_primes_below(n))};
    });
    server.handle("segfault", [](const torchpool::worker::call&) -> torchpool::worker::result {
        std::fprintf(stderr, "demo worker: about to dereference a null pointer, on purpose\n");
        std::fflush(stderr);
        volatile int* nowhere = nullptr;
        *nowhere = 42;
        return {};
    });
    return server.serve();
}
