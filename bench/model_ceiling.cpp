// The ceiling for torchpool-serve's load benchmark (bench/serve_load.sh): the model's own
// forward on one image at a time, in a tight loop on one thread in this process, with no
// HTTP, no JSON and no pool. Prints images/s for batch 1, and for a batch of 32 for scale.
//
// Usage: torchpool-bench-model-ceiling MODEL.pt [SECONDS]
#include <torch/script.h>

#include <ATen/Parallel.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s MODEL.pt [SECONDS]\n", argv[0]);
        return 64;
    }
    const double seconds = argc > 2 ? std::atof(argv[2]) : 3.0;
    at::set_num_threads(1);
    c10::InferenceMode inference;
    auto model = torch::jit::load(argv[1]);
    model.eval();
    for (const int batch : {1, 32}) {
        const auto x = torch::rand({batch, 1, 28, 28});
        for (int i = 0; i < 100; ++i) {
            model.forward({x});  // warm: the executor's plan, caches
        }
        using clock = std::chrono::steady_clock;
        const auto start = clock::now();
        long images = 0;
        while (std::chrono::duration<double>(clock::now() - start).count() < seconds) {
            for (int i = 0; i < 100; ++i) {
                model.forward({x});
            }
            images += 100L * batch;
        }
        const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
        std::printf("in-process forward, batch %d, 1 thread: %.0f images/s\n", batch,
                    static_cast<double>(images) / elapsed);
    }
    return 0;
}
