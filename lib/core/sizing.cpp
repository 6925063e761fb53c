#include "sizing.hpp"

#include <algorithm>

namespace torchpool::core {

namespace {

bool recycles(const pool_params& p) noexcept {
    return p.recycle.max_tasks > 0 || p.recycle.max_age.count() > 0 ||
           p.memory.soft_limit_bytes > 0;
}

std::size_t largest(const pool_params& p) noexcept {
    return std::max({p.workers, p.max_workers, std::size_t{1}});
}

}  // namespace

clock::duration housekeeping_period(const pool_params& p) noexcept {
    std::chrono::milliseconds shortest = p.idle_timeout;
    if (p.recycle.max_age.count() > 0) {
        shortest = std::min(shortest, p.recycle.max_age);
    }
    return std::max(std::chrono::milliseconds{10}, shortest / 10);
}

std::size_t slot_capacity(const pool_params& params) noexcept {
    return largest(params) +
           (recycles(params) ? std::max<std::size_t>(1, params.recycle.max_at_once) : 0);
}

pool_sizing::pool_sizing(const pool_params& params)
    : parked_(slot_capacity(params), true),
      leaving_(slot_capacity(params), false),
      replaces_(slot_capacity(params)),
      replaced_by_(slot_capacity(params)),
      initial_(std::max<std::size_t>(1, params.workers)),
      min_(params.min_workers > 0 ? std::min(params.min_workers, initial_) : initial_),
      max_(largest(params)),
      max_recycling_(recycles(params) ? std::max<std::size_t>(1, params.recycle.max_at_once) : 0),
      idle_timeout_(params.idle_timeout) {}

std::vector<slot_id> pool_sizing::start() {
    std::vector<slot_id> out;
    for (slot_id s = 0; s < initial_; ++s) {
        parked_[s] = false;
        ++in_use_;
        out.push_back(s);
    }
    return out;
}

std::optional<slot_id> pool_sizing::take_parked(bool for_replacement) {
    if (!for_replacement && !may_grow()) {
        return std::nullopt;
    }
    for (slot_id s = 0; s < parked_.size(); ++s) {
        if (parked_[s]) {
            parked_[s] = false;
            ++in_use_;
            return s;
        }
    }
    return std::nullopt;
}

void pool_sizing::park(slot_id s) {
    if (!parked_[s]) {
        parked_[s] = true;
        --in_use_;
    }
    if (leaving_[s]) {
        leaving_[s] = false;
        --leaving_count_;
    }
    handed_over(s);
}

std::size_t pool_sizing::resize(std::size_t workers) {
    const std::size_t n = std::clamp<std::size_t>(workers, 1, parked_.size() - max_recycling_);
    min_ = n;  // the size it keeps from now on, growing under load and shrinking back to it
    max_ = std::max(max_, n);
    return n;
}

void pool_sizing::replacing(slot_id replacement, slot_id old) {
    if (const auto previous = replaces_[replacement]) {
        replaced_by_[*previous].reset();
    } else {
        ++replacing_count_;
    }
    replaces_[replacement] = old;
    replaced_by_[old] = replacement;
}

std::optional<slot_id> pool_sizing::replaces(slot_id replacement) const {
    return replaces_[replacement];
}

void pool_sizing::handed_over(slot_id replacement) {
    if (const auto old = replaces_[replacement]) {
        replaced_by_[*old].reset();
        replaces_[replacement].reset();
        --replacing_count_;
    }
}

}  // namespace torchpool::core
