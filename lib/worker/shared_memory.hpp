// The worker's side of the data plane: the pool's input memory, mapped read-only, where
// requests place their tensors; and the worker's own output memory, a memfd it makes, seals
// and sends with its hello, where its large results go so that the pool never copies them.
// A block of output memory that a reply placed stays the pool's until the pool releases it
// (a release message), since the pool's caller may still be reading it.
#pragma once

#include "../shm/arena.hpp"
#include "../wire/messages.hpp"
#include <torchpool/worker.hpp>

#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace torchpool::worker::detail {

/// What the pool told this worker about shared memory (its environment).
struct shared_memory_setup {
    int inputs_fd = -1;                ///< TORCHPOOL_INPUTS_FD; -1: no input memory
    std::size_t output_bytes = 0;      ///< TORCHPOOL_OUTPUT_BYTES; 0: no output memory
    std::size_t inline_below = 16384;  ///< TORCHPOOL_INLINE_BELOW: smaller results go inline

    static shared_memory_setup from_environment();
};

/// Aligned heap memory for a result, when there is no room in output memory.
output_tensor heap_output(dtype type, std::vector<std::int64_t> shape);

class shared_memory final : public wire::shared_space, public output_allocator {
public:
    /// Maps the inputs and makes the output memory the setup names. What could not be made
    /// is written to `problems` (the worker then works without it).
    shared_memory(const shared_memory_setup& setup, std::string& problems);

    /// The output memory's descriptor, to send with the hello; -1 if there is none.
    int output_fd() const noexcept { return outputs_fd_.get(); }
    /// Closes the output memory's descriptor once the hello has carried it.
    void hello_sent() { outputs_fd_.reset(); }

    /// A tensor of a request: bytes in the pool's input memory, checked to be inside it.
    std::variant<shared_bytes, std::string> claim(wire::shared_ref where) override;

    output_tensor allocate(dtype type, std::vector<std::int64_t> shape) override;

    /// Where each of `tensors` goes in the reply: a block of output memory the handler
    /// filled is placed as it is; another large tensor is copied into a new block, if there
    /// is room; the rest go inline (nullopt). Placed blocks are kept for the pool.
    std::vector<std::optional<wire::shared_ref>> place(std::vector<tensor_view>& tensors);
    /// The pool no longer holds these blocks.
    void release(const wire::release_msg& m);

    std::size_t blocks_held_by_pool() const noexcept { return sent_.size(); }

private:
    std::optional<wire::shared_ref> place_one(tensor_view& t);

    std::shared_ptr<shm::mapping> inputs_;
    std::shared_ptr<const void> inputs_region_;
    std::shared_ptr<shm::arena> outputs_;
    posix::unique_fd outputs_fd_;
    std::size_t inline_below_;
    // Blocks handed to handlers, by offset, to recognise a result that lies in one.
    std::map<std::size_t, std::weak_ptr<const shm::block>> handed_out_;
    // Blocks a reply placed, by the offset it gave, until the pool releases them.
    std::map<std::uint64_t, std::shared_ptr<const shm::block>> sent_;
};

}  // namespace torchpool::worker::detail
