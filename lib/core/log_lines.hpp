// Splits what a process writes to its output pipe into lines, for the host's log observer:
// bytes arrive in pieces of any size; a line is handed out once its newline is in, a line
// longer than `max_line` in pieces of that size, and what is left without a newline when the
// process ends by `flush`.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace torchpool::core {

class line_splitter {
public:
    static constexpr std::size_t max_line = 16 * 1024;

    template <class Emit>
    void feed(std::string_view bytes, Emit&& emit) {
        while (!bytes.empty()) {
            const auto newline = bytes.find('\n');
            const auto piece = bytes.substr(0, newline);
            if (partial_.size() + piece.size() > max_line) {
                const auto room = max_line - partial_.size();
                partial_.append(piece.substr(0, room));
                emit(std::string_view(partial_));
                partial_.clear();
                bytes.remove_prefix(room);
                continue;
            }
            if (newline == std::string_view::npos) {
                partial_.append(piece);
                return;
            }
            if (partial_.empty()) {
                emit(piece);  // the whole line was in this read: no copy
            } else {
                partial_.append(piece);
                emit(std::string_view(partial_));
                partial_.clear();
            }
            bytes.remove_prefix(newline + 1);
        }
    }

    template <class Emit>
    void flush(Emit&& emit) {
        if (!partial_.empty()) {
            emit(std::string_view(partial_));
            partial_.clear();
        }
    }

private:
    std::string partial_;
};

}  // namespace torchpool::core
