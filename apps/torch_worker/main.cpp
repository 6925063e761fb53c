// torchpool's stock LibTorch worker: serves the methods of a TorchScript model to a pool.
// Started by a pool (directly, or once as the fork server whose forks are the workers);
// not meant to be run by hand.
#include "runtime.hpp"
#include <torchpool/worker.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

void usage(std::FILE* to) {
    std::fprintf(to,
                 "usage: torchpool-torch-worker [--model PATH] [--device DEVICE] [--warmup SHAPE\n"
                 "                              [--warmup-batches N]]\n"
                 "\n"
                 "A torchpool worker that serves every method of a TorchScript model: a task's\n"
                 "method names the model method (e.g. forward), its tensors are the arguments,\n"
                 "the result tensors come back. A torchpool pool starts it; it talks to the\n"
                 "pool on fd 3.\n"
                 "\n"
                 "  --model PATH     the TorchScript file (default: %s)\n"
                 "  --device DEVICE  cpu (default), cuda, cuda:N, or round-robin (GPU slot mod\n"
                 "                   GPUs, CPU when there is none); applied in each worker\n"
                 "  --warmup SHAPE   run forward once on zeros of SHAPE (e.g. 1,1,28,28) before\n"
                 "                   the worker counts as ready\n"
                 "  --warmup-batches N  also run it with each first size 1..N (once, shared by\n"
                 "                   every worker in fork-server mode), for a server that\n"
                 "                   batches requests: each new batch size costs TorchScript's\n"
                 "                   executor a profiling run and an optimization\n",
                 TORCHPOOL_DEFAULT_MODEL_PATH);
}

std::vector<std::int64_t> parse_shape(const std::string& text) {
    std::vector<std::int64_t> shape;
    std::size_t at = 0;
    while (at <= text.size()) {
        const std::size_t comma = std::min(text.find(',', at), text.size());
        const std::string part = text.substr(at, comma - at);
        char* end = nullptr;
        const long long d = std::strtoll(part.c_str(), &end, 10);
        if (part.empty() || *end != '\0' || d <= 0) {
            throw std::invalid_argument(
                "--warmup wants positive sizes separated by commas, e.g. "
                "1,1,28,28; got '" +
                text + "'");
        }
        shape.push_back(d);
        at = comma + 1;
    }
    return shape;
}

}  // namespace

int main(int argc, char** argv) {
    std::string model = TORCHPOOL_DEFAULT_MODEL_PATH;
    std::string device = "cpu";
    std::vector<std::int64_t> warmup;
    std::int64_t warmup_batches = 1;
    try {
        for (int i = 1; i < argc; ++i) {
            const std::string arg = argv[i];
            if (arg == "--help" || arg == "-h") {
                usage(stdout);
                return 0;
            }
            if (i + 1 >= argc) {
                throw std::invalid_argument(arg == "--model" || arg == "--device" ||
                                                    arg == "--warmup" || arg == "--warmup-batches"
                                                ? arg + " needs a value"
                                                : "unknown option '" + arg + "'");
            }
            if (arg == "--model") {
                model = argv[++i];
            } else if (arg == "--device") {
                device = argv[++i];
            } else if (arg == "--warmup") {
                warmup = parse_shape(argv[++i]);
            } else if (arg == "--warmup-batches") {
                const std::string value = argv[++i];
                char* end = nullptr;
                warmup_batches = std::strtoll(value.c_str(), &end, 10);
                if (value.empty() || *end != '\0' || warmup_batches < 1 || warmup_batches > 4096) {
                    throw std::invalid_argument(
                        "--warmup-batches wants a count from 1 to 4096; got '" + value + "'");
                }
            } else {
                throw std::invalid_argument("unknown option '" + arg + "'");
            }
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "torchpool-torch-worker: %s\n\n", e.what());
        usage(stderr);
        return 64;
    }

    // Loaded once: in fork-server mode, before the forks, so that every worker shares it.
    std::unique_ptr<torchpool::torch_worker::model_runner> runner;
    try {
        runner = std::make_unique<torchpool::torch_worker::model_runner>(model);
        runner->warm_up_shared(warmup, warmup_batches);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "torchpool-torch-worker: %s\n", e.what());
        return 3;
    }
    torchpool::worker::server server;
    runner->serve_methods(server);
    server.on_start(
        [&](const torchpool::worker::start_info& info) { runner->start(info, device, warmup); });
    return server.serve();
}
