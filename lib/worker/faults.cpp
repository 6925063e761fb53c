#include "faults.hpp"

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <time.h>
#include <vector>

#include <unistd.h>

namespace torchpool::worker::detail {

namespace {

// Memory a `leak` fault keeps for the rest of the worker's life.
std::vector<std::unique_ptr<char[]>> leaked;

void write_all(int fd, const void* data, std::size_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
        const ssize_t n = ::write(fd, p, size);
        if (n <= 0) {
            return;
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
}

[[noreturn]] void block_forever() {
    for (;;) {
        ::pause();
    }
}

}  // namespace

bool provoke(int channel_fd, const fault& f) {
    switch (f.what) {
        case fault::kind::none:
            return true;
        case fault::kind::crash:
            std::fflush(nullptr);
            ::signal(static_cast<int>(f.value), SIG_DFL);
            ::raise(static_cast<int>(f.value));
            ::_exit(128 + static_cast<int>(f.value));  // a signal that does not end a process
        case fault::kind::exit:
            std::fflush(nullptr);
            ::_exit(static_cast<int>(f.value));
        case fault::kind::hang:
            block_forever();
        case fault::kind::leak: {
            auto block = std::make_unique<char[]>(f.value);
            std::memset(block.get(), 0x5a, f.value);  // touched, so that it is resident
            leaked.push_back(std::move(block));
            return true;
        }
        case fault::kind::delay: {
            // The behaviour asked for is a slow answer.
            const timespec pause{static_cast<time_t>(f.value / 1000),
                                 static_cast<long>(f.value % 1000) * 1'000'000};
            ::nanosleep(&pause, nullptr);
            return true;
        }
        case fault::kind::garbage: {
            // A frame header for one segment of 2 words, then words that are no message.
            const std::uint32_t header[2] = {0, 2};
            const std::uint64_t body[2] = {0x7fffffff0000fffcu, 0xdeadbeefdeadbeefu};
            write_all(channel_fd, header, sizeof header);
            write_all(channel_fd, body, sizeof body);
            block_forever();
        }
        case fault::kind::fail:
            return false;
    }
    return true;
}

}  // namespace torchpool::worker::detail
