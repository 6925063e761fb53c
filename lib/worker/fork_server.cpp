#include "fork_server.hpp"

#include "../posix/clone.hpp"
#include "../posix/fd_passing.hpp"
#include "../wire/codec.hpp"
#include "../wire/transport.hpp"
#include "atfork.hpp"

#include <capnp/common.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <malloc.h>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace torchpool::worker::detail {

namespace {

// One packet on the control socket (SOCK_SEQPACKET), with the descriptors it hands over.
bool send_packet(int fd, const wire::outgoing& packet) {
    const auto bytes = packet.bytes.asBytes();
    const iovec iov{const_cast<kj::byte*>(bytes.begin()), bytes.size()};
    const ssize_t n = posix::send_with_fds(fd, &iov, 1, packet.descriptors, posix::send_mode::wait);
    return n >= 0 && static_cast<std::size_t>(n) == bytes.size();
}

// Each fork copies the page-table entries of the server's written memory; LibTorch's heap
// alone is some 12,000 of them in 4 KiB pages, and copying them is a good part of a fork's
// cost. Backed by 2 MiB pages, the same memory is a few dozen entries; a worker that
// writes into one still gets a copy of just the 4 KiB it wrote. MADV_COLLAPSE (Linux 6.1)
// does it at once, whatever the system's transparent-huge-page mode short of "never";
// where it cannot, nothing changes. Gaps inside a collapsed 2 MiB range become resident
// zeros: a few MiB in the server, shared by every worker.
void back_heap_with_huge_pages() {
    constexpr int madv_collapse = 25;  // MADV_COLLAPSE: newer than glibc 2.36's <sys/mman.h>
    constexpr std::uintptr_t huge = 2u << 20;
    std::vector<std::pair<std::uintptr_t, std::uintptr_t>> ranges;
    if (std::FILE* maps = std::fopen("/proc/self/maps", "re")) {
        char line[512];
        while (std::fgets(line, sizeof line, maps)) {
            std::uintptr_t start = 0, end = 0;
            char perms[8] = {};
            char path[256] = {};
            // start-end perms offset dev inode [path]
            if (std::sscanf(line, "%lx-%lx %7s %*s %*s %*s %255s", &start, &end, perms, path) < 3) {
                continue;
            }
            const std::string_view name = path;
            if (std::string_view(perms) != "rw-p" || !(name.empty() || name == "[heap]")) {
                continue;  // only private, writable, anonymous memory
            }
            start = (start + huge - 1) & ~(huge - 1);
            end &= ~(huge - 1);
            if (start < end) {
                ranges.emplace_back(start, end);
            }
        }
        std::fclose(maps);
    }
    for (const auto& [start, end] : ranges) {
        ::madvise(reinterpret_cast<void*>(start), end - start, madv_collapse);
    }
}

std::size_t thread_count() {
    std::error_code ec;
    std::size_t n = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/self/task", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        ++n;
    }
    return n;
}

// posix::create_sibling with what glibc's fork() does around the system call: output
// flushed (or the child would write our buffered output again) and the atfork handlers of
// every library run, prepare before, then parent or child.
long fork_like_glibc(int* pidfd) {
    std::fflush(nullptr);
    run_atfork_prepare();
    const long pid = posix::create_sibling(pidfd);
    if (pid == 0) {
        run_atfork_child();
    } else {
        run_atfork_parent();
    }
    return pid;
}

struct server_context {
    int control_fd;
    pid_t pool;
    int watch_pidfd;  // in a helper: the server's pidfd, whose exit ends the helper
    int inputs;       // the pool's input memory, which each worker keeps (fd 4); -1: none
};

enum class outcome { served, failed, new_worker };

// A new child's word to the server that its hand-over packet is in the pool's socket: a pipe
// whose write end only the child keeps.
struct hand_over_word {
    posix::unique_fd read, write;

    static hand_over_word make() {
        int fds[2] = {-1, -1};
        if (::pipe2(fds, O_CLOEXEC) != 0) {
            return {};  // no word: the server does not wait (as before the word existed)
        }
        return {posix::unique_fd(fds[0]), posix::unique_fd(fds[1])};
    }
    // In the child, once its packet is sent.
    void give() {
        read.reset();
        if (write) {
            const char done = 1;
            [[maybe_unused]] const auto n = ::write(write.get(), &done, 1);
            write.reset();
        }
    }
    // In the server: true once the child gave its word, false if it died without (the end of
    // the pipe, once the child's copy of the write end is gone).
    bool await() {
        write.reset();
        if (!read) {
            return true;
        }
        char done = 0;
        ssize_t n;
        do {
            n = ::read(read.get(), &done, 1);
        } while (n < 0 && errno == EINTR);
        read.reset();
        return n == 1;
    }
};

// For the tests of what follows: the first new child (worker or helper) that finds the file
// named by TORCHPOOL_TEST_DIE_BEFORE_HAND_OVER removes it and is SIGKILLed, as if from outside,
// before it can hand itself over.
void die_here_if_asked() {
    if (const char* file = std::getenv("TORCHPOOL_TEST_DIE_BEFORE_HAND_OVER");
        file && ::unlink(file) == 0) {
        ::raise(SIGKILL);
    }
}

// In the server, after a clone: a child killed from outside (an OOM killer, an operator)
// before it could hand itself over would be a zombie the pool never heard of, and the pool
// would wait for it in vain. So the server waits for the child's word and, failing it, sends
// `in_its_place`, which carries the child's pidfd, so that the pool reaps it and learns it
// is gone.
bool hand_over_if_it_could_not(const server_context& ctx, hand_over_word& word,
                               const wire::outgoing& in_its_place) {
    if (word.await()) {
        return true;
    }
    return send_packet(ctx.control_fd, in_its_place);
}

// Handles one fork request. In a new worker, returns new_worker with `made` set.
outcome fork_one(const server_context& ctx, const wire::fork_request_msg& request,
                 forked_worker& made) {
    wire::fork_reply_msg reply{.sequence = request.sequence};
    int channel[2] = {-1, -1};
    int log[2] = {-1, -1};
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel) != 0 ||
        ::pipe2(log, O_CLOEXEC) != 0) {
        reply.error =
            std::string("cannot create the worker's channel or log pipe: ") + std::strerror(errno);
    }
    posix::unique_fd pool_channel(channel[0]), worker_channel(channel[1]);
    posix::unique_fd log_read(log[0]), log_write(log[1]);
    if (reply.error.empty()) {
        auto word = hand_over_word::make();
        int pidfd = -1;
        const long pid = fork_like_glibc(&pidfd);
        if (pid == 0) {
            // The new worker hands itself over, with a pidfd of its own: so even if the server
            // dies right after the clone, the pool learns of it (the pool treats the server as
            // gone only once every holder of this socket has closed it).
            die_here_if_asked();
            reply.pid = static_cast<int>(::getpid());
            posix::unique_fd self(static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0)));
            if (!self || !send_packet(ctx.control_fd, wire::hand_over_worker(
                                                          request.sequence, reply.pid, self.get(),
                                                          pool_channel.get(), log_read.get()))) {
                ::_exit(126);  // the pool is gone: nobody to work for
            }
            word.give();
            // Its stdin stays the server's (/dev/null); the server's control socket, fd 3, is
            // replaced by the worker's channel.
            posix::settle_child(ctx.pool, worker_channel.get(), log_write.get(), -1, ctx.inputs);
            self.release();  // closed by close_range; do not close numbers reused since
            pool_channel.release();
            worker_channel.release();
            log_read.release();
            log_write.release();
            made.slot = request.slot;
            return outcome::new_worker;
        }
        if (pid >= 0) {
            // The worker sends its own pidfd, unless it died first.
            const posix::unique_fd child(pidfd);
            const auto died =
                wire::refuse_fork(request.sequence,
                                  "the new worker (pid " + std::to_string(pid) +
                                      ") died before it could hand itself over to the pool",
                                  static_cast<int>(pid), child.get());
            return hand_over_if_it_could_not(ctx, word, died) ? outcome::served : outcome::failed;
        }
        reply.error =
            std::string("clone3(CLONE_PARENT | CLONE_PIDFD) failed: ") + std::strerror(errno);
    }
    if (!send_packet(ctx.control_fd, wire::refuse_fork(request.sequence, reply.error))) {
        std::fprintf(stderr, "torchpool fork server: cannot answer the pool: %s\n",
                     std::strerror(errno));
        return outcome::failed;
    }
    return outcome::served;
}

// Serves fork requests until the pool closes the socket (0), something breaks (2), or, in
// a helper, the server exits (0). Returns new_worker in each new worker.
std::variant<int, forked_worker> serve_requests(const server_context& ctx) {
    std::array<capnp::word, 512> buffer;
    for (;;) {
        pollfd fds[2] = {{ctx.control_fd, POLLIN, 0}, {ctx.watch_pidfd, POLLIN, 0}};
        if (::poll(fds, ctx.watch_pidfd >= 0 ? 2 : 1, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return 2;
        }
        if (ctx.watch_pidfd >= 0 && (fds[1].revents & POLLIN) != 0) {
            return 0;  // the server is gone, and a helper goes with it
        }
        // The server and its helpers share this socket, and each request goes to one of
        // them: another may have taken the one that woke us.
        const ssize_t n = ::recv(ctx.control_fd, buffer.data(), sizeof buffer, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
            continue;
        }
        if (n == 0) {
            return 0;  // the pool is done with us
        }
        if (n < 0) {
            std::fprintf(stderr, "torchpool fork server: cannot read from the pool: %s\n",
                         std::strerror(errno));
            return 2;
        }
        auto decoded = wire::decode(
            std::span<const capnp::word>(buffer.data(), static_cast<std::size_t>(n) / 8));
        auto* msg = std::get_if<wire::message>(&decoded);
        auto* request = msg ? std::get_if<wire::fork_request_msg>(msg) : nullptr;
        if (msg && std::holds_alternative<wire::shutdown_msg>(*msg)) {
            return 0;
        }
        if (!request) {
            std::fprintf(stderr, "torchpool fork server: the pool sent %s, not a fork request\n",
                         msg ? wire::message_name(*msg)
                             : std::get<wire::decode_error>(decoded).what.c_str());
            return 2;
        }
        forked_worker made;
        switch (fork_one(ctx, *request, made)) {
            case outcome::served:
                break;
            case outcome::failed:
                return 2;
            case outcome::new_worker:
                return made;
        }
    }
}

// A helper: a sibling of the server (the pool's child too), serving the same socket, so
// that forks, which cost milliseconds each for a process as large as LibTorch, run on
// more than one core. It hands itself over like a worker and dies with the server.
// Returns true in the helper.
bool start_helper(server_context& ctx, int server_pidfd) {
    auto word = hand_over_word::make();
    int pidfd = -1;
    const long pid = fork_like_glibc(&pidfd);
    if (pid < 0) {
        std::fprintf(stderr, "torchpool fork server: cannot start a helper: %s\n",
                     std::strerror(errno));
        return false;
    }
    if (pid > 0) {
        // It hands itself over, unless it died first.
        const posix::unique_fd child(pidfd);
        hand_over_if_it_could_not(ctx, word,
                                  wire::hand_over_helper(static_cast<int>(pid), child.get()));
        return false;
    }
    ::prctl(PR_SET_PDEATHSIG, posix::parent_death_signal);  // see host_watch
    die_here_if_asked();
    posix::unique_fd self(static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0)));
    if (::getppid() != ctx.pool || !self ||
        !send_packet(ctx.control_fd,
                     wire::hand_over_helper(static_cast<int>(::getpid()), self.get()))) {
        ::_exit(126);
    }
    word.give();
    ctx.watch_pidfd = server_pidfd;
    return true;
}

unsigned helpers_from_environment() {
    const char* text = std::getenv("TORCHPOOL_FORK_SERVER_HELPERS");
    return text ? static_cast<unsigned>(std::min(64L, std::max(0L, std::atol(text)))) : 0;
}

}  // namespace

std::variant<int, forked_worker> run_fork_server(int control_fd, const wire::hello_msg& hello) {
    if (const std::size_t threads = thread_count(); threads > 1) {
        std::fprintf(stderr,
                     "torchpool fork server: warning: %zu threads are running before the first "
                     "fork; a worker gets only the forking thread, and a lock another thread "
                     "held stays locked in it. Start no thread pool (LibTorch, OpenMP, CUDA) "
                     "before server::serve().\n",
                     threads);
    }
    if (!send_packet(control_fd, {wire::encode(hello), {}})) {
        std::fprintf(stderr, "torchpool fork server: cannot write to the pool: %s\n",
                     std::strerror(errno));
        return 2;
    }
    // Memory freed while the program loaded (a model's temporary buffers) goes back to the
    // system, so that no fork copies its page tables.
    ::malloc_trim(0);
    back_heap_with_huge_pages();
    server_context ctx{control_fd, ::getppid(), -1,
                       std::getenv("TORCHPOOL_INPUTS_FD") ? posix::inputs_fd : -1};
    const unsigned helpers = helpers_from_environment();
    posix::unique_fd server_pidfd;
    if (helpers > 0) {
        server_pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0)));
    }
    bool is_helper = false;
    for (unsigned i = 0; i < helpers && server_pidfd && !is_helper; ++i) {
        is_helper = start_helper(ctx, server_pidfd.get());
    }
    auto result = serve_requests(ctx);
    if (is_helper && std::holds_alternative<int>(result)) {
        // A fork of the server: its exit handlers are not ours to run.
        std::fflush(nullptr);
        ::_exit(std::get<int>(result));
    }
    return result;
}

}  // namespace torchpool::worker::detail
