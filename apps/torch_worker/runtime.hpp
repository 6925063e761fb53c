// The LibTorch side of torchpool's stock worker: a TorchScript model whose methods serve
// tasks. Worker side only (LibTorch is never linked into the host library).
#pragma once

#include <torchpool/task.hpp>
#include <torchpool/worker.hpp>

#include <torch/script.h>

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace torchpool::torch_worker {

/// A problem with the model or with what a task asked of it, in words that name it. The
/// pool's caller gets it as `errc::task_failed` (type torchpool::torch_worker::model_error).
class model_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Wraps the bytes of `t` as a tensor without copying them (torch::from_blob). The view's
/// bytes must outlive the tensor.
at::Tensor to_torch(const tensor_view& t);

/// A view of a CPU tensor's bytes (made contiguous first if needed) that keeps the tensor
/// alive. Throws model_error for an element type the wire cannot carry.
tensor_view from_torch(at::Tensor t);

/// The device for a worker: "cpu", "cuda" (cuda:0), "cuda:N", or "round-robin" (GPU
/// `slot` mod the number of visible GPUs; the CPU when there is none). Throws model_error
/// for a CUDA device that is not there, saying why.
c10::Device pick_device(const std::string& spec, std::size_t slot);

class model_runner {
public:
    /// Loads a TorchScript file. Throws model_error if it is missing or will not load.
    explicit model_runner(const std::string& path);

    /// Once, in the process that loaded the model, before server::serve() (so, in
    /// fork-server mode, before any fork): runs forward on zeros of `warmup_shape` on one
    /// thread, twice, so that the TorchScript executor's optimized plan exists once and is
    /// shared by every fork instead of being built again in each worker. One thread starts
    /// no thread pool, as a fork server must not. Nothing if the shape is empty.
    /// `batches` > 1: each first size 1..batches in turn (a server that batches requests
    /// sends every one of them; each new shape costs the executor a profiling run and an
    /// optimization, tens of milliseconds, which the first requests would otherwise wait).
    void warm_up_shared(const std::vector<std::int64_t>& warmup_shape, std::int64_t batches = 1);

    /// In each worker, before it says hello: thread counts (before LibTorch starts a pool),
    /// the device (the model is moved there), then a warm-up run of `forward` on zeros of
    /// `warmup_shape` (none if empty). Throws model_error.
    void start(const worker::start_info& info, const std::string& device,
               const std::vector<std::int64_t>& warmup_shape);

    std::vector<std::string> method_names() const;

    /// Runs `method` on the tensors, one positional argument each, and returns the result
    /// tensors (a tensor, or a tuple or list of them). Throws model_error.
    worker::result run(std::string_view method, std::span<const tensor_view> inputs);

    /// Registers every method of the model as a handler of `server`.
    void serve_methods(worker::server& server);

    const c10::Device& device() const noexcept { return device_; }

private:
    std::string path_;
    torch::jit::Module module_;
    c10::Device device_{c10::kCPU};
};

}  // namespace torchpool::torch_worker
