// The last bytes a worker wrote to its stdout/stderr, kept for diagnostics.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace torchpool::core {

/// Keeps about the last `capacity` bytes appended. `text()` starts at a line boundary when
/// older bytes were dropped, so a reader never sees half a line at the top.
class log_tail {
public:
    explicit log_tail(std::size_t capacity) : capacity_(capacity) {}

    void append(std::string_view bytes);
    std::string text() const;
    void clear() noexcept {
        buffer_.clear();
        dropped_ = false;
    }

private:
    std::size_t capacity_;
    std::string buffer_;  // grows to 2 * capacity_ before old bytes are dropped
    bool dropped_ = false;
};

}  // namespace torchpool::core
