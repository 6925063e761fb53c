// The pool's phase: made, running, draining (graceful shutdown: no new tasks, the admitted
// ones finish), stopping (every task aborted, every process killed), finished. Phases only
// move forward, and only here.
#pragma once

namespace torchpool::core {

class pool_phase {
public:
    enum class value { made, running, draining, stopping, finished };

    value get() const noexcept { return value_; }
    /// False unless it was only made.
    bool start() noexcept {
        if (!advance(value::made, value::running)) {
            return false;
        }
        ran_ = true;
        return true;
    }
    /// False if it drains, stops or has finished already.
    bool drain() noexcept { return value_ <= value::running && (value_ = value::draining, true); }
    /// False if it stops or has finished already.
    bool stop() noexcept { return value_ < value::stopping && (value_ = value::stopping, true); }
    void finish() noexcept { value_ = value::finished; }

    /// It ran (whatever it does now).
    bool started() const noexcept { return ran_; }
    /// New tasks are admitted (before it runs too: they wait for the workers).
    bool admitting() const noexcept { return value_ <= value::running; }
    bool draining() const noexcept { return value_ == value::draining; }
    bool stopping() const noexcept { return value_ == value::stopping; }
    /// Draining or stopping: it finishes once every task and process is gone.
    bool ending() const noexcept { return draining() || stopping(); }
    bool finished() const noexcept { return value_ == value::finished; }

private:
    bool advance(value from, value to) noexcept { return value_ == from && (value_ = to, true); }

    value value_ = value::made;
    bool ran_ = false;
};

}  // namespace torchpool::core
