// What the workers write to stdout and stderr, line by line, for the host's own logging.
#pragma once

#include <cstddef>
#include <functional>
#include <string_view>

namespace torchpool {

/// One line a worker (or the fork server) wrote to its stdout or stderr. The two streams share
/// one pipe, so lines keep the order in which they were written, whichever stream.
struct log_line {
    /// The worker's slot in the pool; 0 for the fork server.
    std::size_t slot = 0;
    int pid = 0;
    /// True for a line of the fork server (or one of its helpers) rather than a worker.
    bool fork_server = false;
    /// The line without its newline; valid during the call only. A line longer than 16 KiB
    /// arrives in pieces of that size; a last line without a newline arrives when the process
    /// ends.
    std::string_view text;
};

/// Called on the pool's executor for every line, from inside the pool's event handling: it
/// must not block and must not throw.
using log_observer = std::function<void(const log_line&)>;

}  // namespace torchpool
