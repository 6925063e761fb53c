#include <torchpool/worker.hpp>

int main() {
    torchpool::worker::server server;
    server.handle("echo", [](const torchpool::worker::call& c) {
        return torchpool::worker::result{.payload = std::string(c.payload)};
    });
    return server.serve();
}
