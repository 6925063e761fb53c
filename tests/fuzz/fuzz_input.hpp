// A fuzz target's input, read a field at a time; zeros (and empty strings) once it runs out,
// so that every input, however short, drives a whole scenario.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

namespace torchpool::fuzz {

class input {
public:
    input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
    bool empty() const noexcept { return at_ >= size_; }
    std::uint8_t byte() noexcept { return at_ < size_ ? data_[at_++] : 0; }
    /// The next `n` bytes, or fewer at the end.
    std::string bytes(std::size_t n) {
        n = std::min(n, size_ - std::min(at_, size_));
        std::string out(reinterpret_cast<const char*>(data_) + at_, n);
        at_ += n;
        return out;
    }

private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t at_ = 0;
};

}  // namespace torchpool::fuzz
