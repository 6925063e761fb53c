// A worker built on the worker SDK whose methods misbehave on request, so that process
// tests can provoke every failure for real.
//
// Start-up options:
//   --model PATH         ignored (torchpool-serve passes its model's path)
//   --slow-start MS      wait MS milliseconds before saying hello
//   --busy-start MS      compute for MS milliseconds of CPU time before saying hello
//   --exit-at-start N    write a line to stderr and exit with code N before saying hello
//   --never-ready        never say hello (block forever)
//   --exit-at-start-while FILE  as --exit-at-start 3, while FILE exists
//   --fail-start-hook    the SDK's start hook throws (in each worker, after a fork)
//   --unsealed-outputs   say hello by hand, sending output memory whose size is not sealed
//   --truncate-inputs    try to truncate the pool's input memory (fd 4) and write to stderr
//                        whether the kernel allowed it, then serve as usual
// Shared memory (tests/process/shared_memory_test.cpp):
//   fill (bytes, value)  reply with a uint8 tensor of that many bytes, all `value`, written
//                        in place in output memory (call::allocate_output)
//   sum                  reply with the sum of the bytes of the first tensor, read in place
//   write_input          write into the first input tensor (read-only shared memory)
//   bad_reference (kind) reply by hand with a tensor placed in output memory wrongly:
//                        "outside" its end, "overlap" a block a caller holds (the first
//                        fill's), or "length" not matching the shape; then block
// Methods (payload in parentheses):
//   echo (any)           reply with the same payload and tensors
//   pid                  reply with this process's pid
//   sleep (ms)           sleep, then reply "slept"
//   crash (signal no.)   raise that signal
//   exit (code)          exit with that code at once
//   hang                 block forever
//   block_in_read        block forever in read() on a pipe nobody writes to
//   allocate (MiB)       allocate and touch that much, keep it, answer (bad_alloc if refused)
//   grow (MiB)           allocate and touch 1 MiB per millisecond up to that much, then block
//   ignore_term_and_hang ignore SIGTERM, then block forever
//   throw (message)      throw std::runtime_error(message)
//   garbage              write a frame with a valid header and a corrupt body, then block
//   oversize             write a frame header announcing 1 GiB, then block
//   send_descriptor      write the first bytes of a frame with a descriptor attached
//                        (SCM_RIGHTS), then block
//   log_then_crash (text) write the text to stderr, then abort()
//   close_channel        close the channel, then block
//   print (text)         write the text to stdout and reply "printed"
//   parent               reply with the parent's pid
//   start_info           reply "slot=S intra=A inter=B forked=F" from the start hook
//   cancellable (ms)     print "cancellable started", then work in 1 ms steps for up to ms,
//                        polling call::cancelled(); stop (cancelled_error) when it is set,
//                        else reply "finished"
//   ignore_cancel (ms)   print "ignore_cancel started", then work ms without looking at
//                        cancellation; reply "finished"
//   print_lines (n)      write "line 1" .. "line n" to stdout and stderr alternately
#include "posix/fd_passing.hpp"
#include "wire/codec.hpp"
#include <torchpool/worker.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <pthread.h>
#include <stdexcept>
#include <string>
#include <thread>

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace {

using torchpool::worker::call;
using torchpool::worker::result;

[[noreturn]] void block_forever() {
    for (;;) {
        ::pause();
    }
}

void write_raw(const void* data, std::size_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
        const ssize_t n = ::write(3, p, size);
        if (n <= 0) {
            return;
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
}

// What the atfork handlers registered in main saw: in a worker made by the fork server,
// prepare ran in the server before the fork, child in the worker after it.
int atfork_prepared = 0;
int atfork_child_ran = 0;

// The CPUs this thread may run on, as the kernel says ("0-1", "1").
std::string own_cpus() {
    std::ifstream in("/proc/thread-self/status");
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("Cpus_allowed_list:")) {
            return line.substr(line.find_first_not_of(" \t", 18));
        }
    }
    return "?";
}

int to_int(std::string_view text) {
    return std::atoi(std::string(text).c_str());
}

}  // namespace

std::chrono::nanoseconds process_cpu_time() {
    timespec t{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec);
}

// A hello written by hand, with output memory whose size is not sealed: a worker that could
// truncate it under the pool's mapping. The pool must refuse it.
int hello_with_unsealed_outputs() {
    const int memory = ::memfd_create("unsealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (memory < 0 || ::ftruncate(memory, 1 << 20) != 0) {
        return 70;
    }
    torchpool::wire::hello_msg hello{
        .pid = static_cast<int>(::getpid()),
        .protocol_version = torchpool::wire::protocol_version,
        .capabilities = {std::string(torchpool::wire::uses_shared_memory)},
        .methods = {"echo"}};
    const auto frame = torchpool::wire::encode(hello);
    const iovec whole{const_cast<kj::byte*>(frame.asBytes().begin()), frame.asBytes().size()};
    const int fds[] = {memory};
    torchpool::posix::send_with_fds(3, &whole, 1, fds, torchpool::posix::send_mode::wait);
    block_forever();
}

// Writes a reply to `c` by hand whose tensor is placed in output memory as `kind` says.
[[noreturn]] void reply_with_bad_reference(const call& c, std::string_view kind) {
    torchpool::wire::shared_ref where{1u << 30, 16};  // "outside"
    if (kind == "overlap") {
        where = {0, 16};  // the first block of output memory (first fit): the first fill's
    } else if (kind == "length") {
        where = {0, 15};
    }
    const std::byte nothing[16] = {};
    const torchpool::tensor_view t{torchpool::dtype::float32, {4}, nothing, nullptr};
    const std::optional<torchpool::wire::shared_ref> placed[] = {where};
    torchpool::wire::encode_to({.id = c.id, .ok = true, .tensors = {&t, 1}, .placed = placed},
                               [](std::span<const iovec> parts) {
                                   for (const auto& part : parts) {
                                       if (::write(3, part.iov_base, part.iov_len) < 0) {
                                           return false;
                                       }
                                   }
                                   return true;
                               });
    block_forever();
}

int main(int argc, char** argv) {
    bool fail_start_hook = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--slow-start" && i + 1 < argc) {
            // The behaviour under test is a slow start-up, not synchronization.
            std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(argv[++i])));
        } else if (arg == "--busy-start" && i + 1 < argc) {
            // A start that takes CPU time, as loading a model does.
            const auto want = std::chrono::milliseconds(std::atoi(argv[++i]));
            volatile std::uint64_t sink = 0;
            while (process_cpu_time() < want) {
                for (int k = 0; k < 100'000; ++k) {
                    sink = sink + static_cast<std::uint64_t>(k);
                }
            }
        } else if (arg == "--exit-at-start" && i + 1 < argc) {
            std::fprintf(stderr, "fake_worker: failing at start as asked\n");
            return std::atoi(argv[++i]);
        } else if (arg == "--exit-at-start-while" && i + 1 < argc) {
            if (::access(argv[++i], F_OK) == 0) {
                std::fprintf(stderr, "fake_worker: cannot start while %s exists\n", argv[i]);
                return 3;
            }
        } else if (arg == "--model" && i + 1 < argc) {
            ++i;  // torchpool-serve names its model; this worker has none (its echo serves)
        } else if (arg == "--never-ready") {
            block_forever();
        } else if (arg == "--fail-start-hook") {
            fail_start_hook = true;
        } else if (arg == "--unsealed-outputs") {
            return hello_with_unsealed_outputs();
        } else if (arg == "--truncate-inputs") {
            const bool truncated = ::ftruncate(4, 0) == 0;
            std::fprintf(stderr, "fake_worker: truncating the input memory %s: %s\n",
                         truncated ? "succeeded" : "was refused",
                         truncated ? "" : std::strerror(errno));
        } else {
            std::fprintf(stderr, "fake_worker: unknown option %s\n", arg.c_str());
            return 64;
        }
    }

    ::pthread_atfork([] { ++atfork_prepared; }, nullptr, [] { atfork_child_ran = 1; });
    torchpool::worker::server server;
    std::string start_info = "start hook not run";
    server.on_start([&](const torchpool::worker::start_info& info) {
        if (fail_start_hook) {
            throw std::runtime_error("fake_worker: start hook failing as asked");
        }
        start_info = "slot=" + std::to_string(info.slot) +
                     " intra=" + std::to_string(info.intra_op_threads) +
                     " inter=" + std::to_string(info.inter_op_threads) +
                     " forked=" + std::to_string(info.forked ? 1 : 0);
    });
    server.handle("start_info", [&](const call&) { return result{.payload = start_info}; });
    server.handle("atfork", [](const call&) {
#if defined(__SANITIZE_THREAD__)
        return result{.payload = "not under ThreadSanitizer"};
#else
        return result{.payload = "prepare=" + std::to_string(atfork_prepared) +
                                 " child=" + std::to_string(atfork_child_ran)};
#endif
    });
    // Pins the calling thread to the CPU in the payload, as a LibTorch worker pinning its
    // threads would, and answers with the CPUs the kernel now allows it.
    server.handle("pin", [](const call& c) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(to_int(c.payload), &set);
        const int err = ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set);
        return result{.payload =
                          err == 0 ? own_cpus() : std::string("error ") + std::strerror(err)};
    });
    server.handle("parent",
                  [](const call&) { return result{.payload = std::to_string(::getppid())}; });
    server.handle("fill", [](const call& c) {
        const auto space = c.payload.find(' ');
        const auto bytes = static_cast<std::int64_t>(to_int(c.payload.substr(0, space)));
        const int value = to_int(c.payload.substr(space + 1));
        auto out = c.allocate_output(torchpool::dtype::uint8, {bytes});
        std::memset(out.bytes.data(), value, out.bytes.size());
        return result{.tensors = {out.view}};
    });
    server.handle("sum", [](const call& c) {
        std::uint64_t sum = 0;
        for (const auto b : c.tensors.front().data) {
            sum += static_cast<std::uint8_t>(b);
        }
        return result{.payload = std::to_string(sum)};
    });
    server.handle("write_input", [](const call& c) -> result {
        auto* first = const_cast<std::byte*>(c.tensors.front().data.data());
        first[0] = std::byte{1};  // SIGSEGV: the pool's input memory is read-only here
        return result{.payload = "wrote into the input"};
    });
    server.handle("bad_reference",
                  [](const call& c) -> result { reply_with_bad_reference(c, c.payload); });
    server.handle("echo", [](const call& c) {
        return result{.payload = std::string(c.payload),
                      .tensors = {c.tensors.begin(), c.tensors.end()}};
    });
    server.handle("pid", [](const call&) { return result{.payload = std::to_string(::getpid())}; });
    server.handle("sleep", [](const call& c) {
        std::this_thread::sleep_for(std::chrono::milliseconds(to_int(c.payload)));
        return result{.payload = "slept"};
    });
    // Allocates and touches PAYLOAD MiB, kept until the worker exits, then answers.
    server.handle("allocate", [](const call& c) {
        const std::size_t bytes = static_cast<std::size_t>(to_int(c.payload)) << 20;
        auto* block = static_cast<volatile char*>(std::malloc(bytes));
        if (block == nullptr) {
            throw std::bad_alloc();
        }
        for (std::size_t i = 0; i < bytes; i += 4096) {
            block[i] = 1;
        }
        return result{};
    });
    // Grows by 1 MiB (touched) every millisecond up to PAYLOAD MiB, then blocks.
    server.handle("grow", [](const call& c) -> result {
        for (int i = 0; i < to_int(c.payload); ++i) {
            auto* block = static_cast<volatile char*>(std::malloc(1 << 20));
            for (std::size_t at = 0; at < (1 << 20); at += 4096) {
                block[at] = 1;
            }
            // The pace of the growth, so that the pool samples it on the way up.
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        block_forever();
    });
    server.handle("crash", [](const call& c) -> result {
        ::raise(to_int(c.payload));
        block_forever();
    });
    server.handle("exit", [](const call& c) -> result { ::_exit(to_int(c.payload)); });
    server.handle("hang", [](const call&) -> result { block_forever(); });
    server.handle("block_in_read", [](const call&) -> result {
        int fds[2];
        if (::pipe(fds) != 0) {
            throw std::runtime_error("pipe failed");
        }
        char byte;
        for (;;) {
            (void)!::read(fds[0], &byte, 1);
        }
    });
    server.handle("ignore_term_and_hang", [](const call&) -> result {
        ::signal(SIGTERM, SIG_IGN);
        block_forever();
    });
    server.handle(
        "throw", [](const call& c) -> result { throw std::runtime_error(std::string(c.payload)); });
    server.handle("garbage", [](const call&) -> result {
        // One segment of 4 words whose root pointer points far outside the segment.
        const std::uint32_t header[2] = {0, 4};
        const std::uint64_t body[4] = {0x7fffffff00000000u | 0xfffc, 0xdeadbeefdeadbeefu,
                                       0xdeadbeefdeadbeefu, 0xdeadbeefdeadbeefu};
        write_raw(header, sizeof header);
        write_raw(body, sizeof body);
        block_forever();
    });
    server.handle("oversize", [](const call&) -> result {
        const std::uint32_t header[2] = {0, (1u << 30) / 8};
        write_raw(header, sizeof header);
        block_forever();
    });
    server.handle("send_descriptor", [](const call&) -> result {
        const std::uint32_t segments = 0;  // the start of a frame's segment table
        iovec iov{const_cast<std::uint32_t*>(&segments), sizeof segments};
        union {
            char bytes[CMSG_SPACE(sizeof(int))];
            cmsghdr align;
        } control{};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.bytes;
        msg.msg_controllen = sizeof control.bytes;
        cmsghdr* header = CMSG_FIRSTHDR(&msg);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int));
        const int fd = 2;  // its stderr: any descriptor will do
        std::memcpy(CMSG_DATA(header), &fd, sizeof fd);
        (void)!::sendmsg(3, &msg, MSG_NOSIGNAL);
        block_forever();
    });
    server.handle("log_then_crash", [](const call& c) -> result {
        std::fprintf(stderr, "%.*s\n", static_cast<int>(c.payload.size()), c.payload.data());
        std::fflush(stderr);
        std::abort();
    });
    server.handle("close_channel", [](const call&) -> result {
        ::close(3);
        block_forever();
    });
    server.handle("cancellable", [](const call& c) {
        std::printf("cancellable started\n");
        std::fflush(stdout);
        for (int i = 0; i < to_int(c.payload); ++i) {
            c.throw_if_cancelled();
            std::this_thread::sleep_for(std::chrono::milliseconds(1));  // a step of work
        }
        return result{.payload = "finished"};
    });
    server.handle("ignore_cancel", [](const call& c) {
        std::printf("ignore_cancel started\n");
        std::fflush(stdout);
        std::this_thread::sleep_for(std::chrono::milliseconds(to_int(c.payload)));  // work
        return result{.payload = "finished"};
    });
    server.handle("print_lines", [](const call& c) {
        for (int i = 1; i <= to_int(c.payload); ++i) {
            std::FILE* out = i % 2 == 0 ? stderr : stdout;
            std::fprintf(out, "line %d\n", i);
            std::fflush(out);
        }
        return result{};
    });
    server.handle("print", [](const call& c) {
        std::printf("%.*s\n", static_cast<int>(c.payload.size()), c.payload.data());
        std::fflush(stdout);
        return result{.payload = "printed"};
    });
    return server.serve();
}
