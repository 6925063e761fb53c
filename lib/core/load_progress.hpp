// Policy: a process that is still loading when its load_timeout passes gets the time again,
// up to pool_params::load_extensions times, if it used CPU time since the last look. A machine
// whose cores are busy with other work slows every start; a process that computes is making
// progress, one that used no CPU is stuck. Shared by workers and the fork server.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>

namespace torchpool::core {

class load_progress {
public:
    explicit load_progress(std::size_t max_extensions) : max_extensions_(max_extensions) {}

    /// A new process: no look yet.
    void reset() noexcept {
        cpu_ = std::chrono::nanoseconds(0);
        extensions_ = 0;
    }

    /// Its load_timeout passed; `used`: the CPU time it has used (nullopt: unknown, or it is
    /// gone). True if it gets load_timeout again.
    bool extend(std::optional<std::chrono::nanoseconds> used) noexcept {
        if (extensions_ >= max_extensions_ || !used || *used <= cpu_) {
            return false;
        }
        cpu_ = *used;
        ++extensions_;
        return true;
    }

    std::size_t extensions() const noexcept { return extensions_; }
    /// It was refused more time while it had extensions left: it used no CPU since the last
    /// look.
    bool stuck() const noexcept { return extensions_ < max_extensions_; }

private:
    std::size_t max_extensions_;
    std::chrono::nanoseconds cpu_{0};
    std::size_t extensions_ = 0;
};

}  // namespace torchpool::core
