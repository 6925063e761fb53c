#include "log_tail.hpp"

namespace torchpool::core {

void log_tail::append(std::string_view bytes) {
    if (bytes.size() >= capacity_) {
        buffer_.assign(bytes.substr(bytes.size() - capacity_));
        dropped_ = true;
        return;
    }
    buffer_.append(bytes);
    if (buffer_.size() > 2 * capacity_) {
        buffer_.erase(0, buffer_.size() - capacity_);
        dropped_ = true;
    }
}

std::string log_tail::text() const {
    std::string_view view = buffer_;
    bool cut = dropped_;
    if (view.size() > capacity_) {
        view.remove_prefix(view.size() - capacity_);
        cut = true;
    }
    if (cut) {
        // The first line is probably missing its beginning; drop it if another follows.
        if (auto nl = view.find('\n'); nl != std::string_view::npos && nl + 1 < view.size()) {
            view.remove_prefix(nl + 1);
        }
    }
    return std::string(view);
}

}  // namespace torchpool::core
