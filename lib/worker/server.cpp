#include "../posix/fd_passing.hpp"
#include "../wire/codec.hpp"
#include "../wire/frame_reader.hpp"
#include "faults.hpp"
#include "fork_server.hpp"
#include "host_watch.hpp"
#include "inbox.hpp"
#include "shared_memory.hpp"
#include <torchpool/worker.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cxxabi.h>
#include <exception>
#include <time.h>
#include <typeinfo>
#include <unordered_map>
#include <unordered_set>

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace torchpool::worker {

using handler_table = std::map<std::string, handler, std::less<>>;

namespace {

// The worker's frames come from the pool, which is trusted more than the worker; still,
// a limit keeps a confused pool from making the worker allocate without bound.
constexpr std::size_t max_request_bytes = 1u << 30;

int channel_from_environment() {
    if (const char* text = std::getenv("TORCHPOOL_CHANNEL_FD")) {
        char* end = nullptr;
        const long fd = std::strtol(text, &end, 10);
        if (end != text && *end == '\0' && fd >= 0 && fd < 1 << 20) {
            return static_cast<int>(fd);
        }
    }
    return 3;
}

std::string demangle(const char* name) {
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> text(
        abi::__cxa_demangle(name, nullptr, nullptr, &status), std::free);
    return status == 0 && text ? std::string(text.get()) : std::string(name);
}

// Writes all of `parts`, however the kernel splits it.
bool send_all(int fd, std::span<const iovec> parts) {
    iovec local[16];
    if (parts.size() > std::size(local)) {
        return false;
    }
    std::copy(parts.begin(), parts.end(), local);
    iovec* next = local;
    std::size_t count = parts.size();
    while (count > 0) {
        msghdr msg{};
        msg.msg_iov = next;
        msg.msg_iovlen = count;
        // MSG_NOSIGNAL: if the pool is gone, fail here instead of dying of SIGPIPE.
        const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        auto left = static_cast<std::size_t>(n);
        while (count > 0 && left >= next->iov_len) {
            left -= next->iov_len;
            ++next;
            --count;
        }
        if (count > 0) {
            next->iov_base = static_cast<char*>(next->iov_base) + left;
            next->iov_len -= left;
        }
    }
    return true;
}

bool write_all(int fd, const kj::ArrayPtr<const kj::byte> bytes) {
    const iovec whole{const_cast<kj::byte*>(bytes.begin()), bytes.size()};
    return send_all(fd, {&whole, 1});
}

// Sends the hello, with the output memory's descriptor when there is one.
bool send_hello(int fd, const wire::hello_msg& hello, int output_memory) {
    const auto frame = wire::encode(hello);
    const auto bytes = frame.asBytes();
    if (output_memory < 0) {
        return write_all(fd, bytes);
    }
    const iovec whole{const_cast<kj::byte*>(bytes.begin()), bytes.size()};
    const int fds[] = {output_memory};
    const ssize_t n = posix::send_with_fds(fd, &whole, 1, fds, posix::send_mode::wait);
    if (n < 0) {
        return false;
    }
    const auto sent = static_cast<std::size_t>(n);
    return sent == bytes.size() || write_all(fd, bytes.slice(sent, bytes.size()));
}

// A reply being written; its views point into the request, the result or these strings.
struct outgoing_reply {
    std::uint64_t id = 0;
    bool ok = true;
    std::string error_type;
    std::string error_message;
    result value;
    std::vector<std::optional<wire::shared_ref>> placed;

    wire::reply_view view() const {
        return {id, ok, error_type, error_message, value.payload, value.tensors, placed};
    }
};

outgoing_reply not_run(std::uint64_t id, std::string type, std::string message) {
    return {
        .id = id, .ok = false, .error_type = std::move(type), .error_message = std::move(message)};
}

bool past(std::uint64_t deadline_ns) {
    if (deadline_ns == 0) {
        return false;
    }
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    return static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000u +
               static_cast<std::uint64_t>(now.tv_nsec) >
           deadline_ns;
}

// Runs the handler for `req`; a thrown exception becomes an error reply.
outgoing_reply run(const handler_table& handlers, const wire::request_view& req,
                   cancellation_source& cancellation, output_allocator& outputs) {
    outgoing_reply reply{.id = req.id};
    auto it = handlers.find(req.method);
    if (it == handlers.end()) {
        reply.ok = false;
        reply.error_type = "torchpool::unknown_method";
        reply.error_message =
            "this worker has no handler for method '" + std::string(req.method) + "'; it serves:";
        for (const auto& [name, h] : handlers) {
            reply.error_message += " " + name;
        }
        return reply;
    }
    try {
        result r = it->second(call{req.id, req.method, req.payload, req.tensors, req.deadline_ns,
                                   &cancellation, &outputs});
        for (std::size_t i = 0; i < r.tensors.size(); ++i) {
            if (auto problem = wire::validate_tensor(r.tensors[i]); !problem.empty()) {
                return not_run(
                    req.id, "torchpool::invalid_result",
                    "the handler returned tensor " + std::to_string(i) + ", which " + problem);
            }
        }
        reply.value = std::move(r);
    } catch (const cancelled_error& e) {
        reply.ok = false;
        reply.error_type = wire::cancelled_error;
        reply.error_message = e.what();
    } catch (const std::exception& e) {
        reply.ok = false;
        reply.error_type = demangle(typeid(e).name());
        reply.error_message = e.what();
    } catch (...) {
        reply.ok = false;
        auto* type = abi::__cxa_current_exception_type();
        reply.error_type = type ? demangle(type->name()) : "unknown";
        reply.error_message = "a non-standard exception";
    }
    return reply;
}

unsigned unsigned_from_environment(const char* name) {
    if (const char* text = std::getenv(name)) {
        char* end = nullptr;
        const unsigned long value = std::strtoul(text, &end, 10);
        if (end != text && *end == '\0' && value < 1u << 20) {
            return static_cast<unsigned>(value);
        }
    }
    return 0;
}

bool fork_server_mode() {
    const char* mode = std::getenv("TORCHPOOL_FORK_SERVER");
    return mode && std::strcmp(mode, "1") == 0;
}

}  // namespace

output_tensor call::allocate_output(dtype type, std::vector<std::int64_t> shape) const {
    return outputs ? outputs->allocate(type, std::move(shape))
                   : detail::heap_output(type, std::move(shape));
}

struct server::state {
    int fd;
    handler_table handlers;
    start_hook hook;
};

namespace {

wire::hello_msg make_hello(const handler_table& handlers) {
    wire::hello_msg hello{.pid = static_cast<int>(::getpid()),
                          .protocol_version = wire::protocol_version};
    for (const auto& [name, h] : handlers) {
        hello.methods.push_back(name);
    }
    return hello;
}

}  // namespace

server::server() : server(channel_from_environment()) {
    detail::die_with_host();
}

server::server(int channel_fd) : state_(std::make_unique<state>(state{channel_fd, {}, {}})) {}

server::~server() = default;

void server::handle(std::string method, handler h) {
    state_->handlers.insert_or_assign(std::move(method), std::move(h));
}

void server::on_start(start_hook hook) {
    state_->hook = std::move(hook);
}

int server::serve() {
    start_info info{.slot = unsigned_from_environment("TORCHPOOL_WORKER_SLOT"),
                    .intra_op_threads = unsigned_from_environment("TORCHPOOL_INTRA_OP_THREADS"),
                    .inter_op_threads = unsigned_from_environment("TORCHPOOL_INTER_OP_THREADS")};
    if (fork_server_mode()) {
        auto hello = make_hello(state_->handlers);
        hello.capabilities.push_back("fork-server");
        auto outcome = detail::run_fork_server(state_->fd, hello);
        if (const int* exit_code = std::get_if<int>(&outcome)) {
            return *exit_code;
        }
        // A new worker, made by the fork server. It never returns from here: exit handlers
        // that libraries registered in the server (thread pools, loggers) are not safe to
        // run in a fork, so it ends with _exit, as a forked child should.
        state_->fd = 3;
        info.slot = std::get<detail::forked_worker>(outcome).slot;
        info.forked = true;
        const int code = serve_worker(info);
        std::fflush(nullptr);
        ::_exit(code);
    }
    return serve_worker(info);
}

int server::serve_worker(const start_info& info) {
    // pool_params::memory.limit_address_space: allocations past the limit fail in here.
    if (const char* limit = std::getenv("TORCHPOOL_ADDRESS_SPACE_LIMIT")) {
        const rlim_t bytes = std::strtoull(limit, nullptr, 10);
        const rlimit as{.rlim_cur = bytes, .rlim_max = bytes};
        if (bytes > 0 && ::setrlimit(RLIMIT_AS, &as) != 0) {
            std::fprintf(stderr, "torchpool worker: cannot limit the address space to %s: %s\n",
                         limit, std::strerror(errno));
        }
    }
    if (state_->hook) {
        try {
            state_->hook(info);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "torchpool worker: could not start: %s\n", e.what());
            return 3;
        }
    }
    const int fd = state_->fd;
    std::string problems;
    detail::shared_memory memory(detail::shared_memory_setup::from_environment(), problems);
    if (!problems.empty()) {
        std::fprintf(stderr, "torchpool worker: %s", problems.c_str());
    }
    auto hello = make_hello(state_->handlers);
    hello.capabilities.emplace_back(wire::answers_heartbeats);
    if (memory.output_fd() >= 0) {
        hello.capabilities.emplace_back(wire::uses_shared_memory);
    }
    const bool said_hello = send_hello(fd, hello, memory.output_fd());
    memory.hello_sent();
    if (!said_hello) {
        std::fprintf(stderr, "torchpool worker: cannot write to the pool's channel (fd %d): %s\n",
                     fd, std::strerror(errno));
        return 2;
    }

    wire::frame_reader reader(max_request_bytes);
    // Requests are views into the reader's buffer, which stays put until the next prepare().
    std::vector<std::variant<wire::message, wire::request_view>> batch;
    std::unordered_set<std::uint64_t> cancelled;
    detail::channel_inbox inbox(fd, reader, cancelled, max_request_bytes);
    // pool_params::faults: faults the pool asked for, by task, honoured only when it says
    // fault injection is on.
    const bool faults_enabled = std::getenv("TORCHPOOL_FAULT_INJECTION") != nullptr;
    std::unordered_map<std::uint64_t, fault> faults;
    const auto in_batch = [&batch](std::uint64_t id) {
        return std::any_of(batch.begin(), batch.end(), [id](const auto& item) {
            const auto* req = std::get_if<wire::request_view>(&item);
            return req && req->id == id;
        });
    };
    for (;;) {
        // Every request of the last batch was answered, so a cancel can only be for one of
        // the next; those that arrived while handlers ran are in what the inbox hands over,
        // and are decoded again below.
        cancelled.clear();
        if (!inbox.hand_over(reader)) {
            auto space = reader.prepare(64 * 1024);
            const ssize_t n = ::read(fd, space.data(), space.size());
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                std::fprintf(stderr, "torchpool worker: cannot read the pool's channel: %s\n",
                             std::strerror(errno));
                return 2;
            }
            if (n == 0) {
                return 0;  // the pool closed the channel: it is gone or done with us
            }
            reader.commit(static_cast<std::size_t>(n));
        }

        // Decode everything that has arrived first, so that a cancel sent after a request
        // that has not started yet is seen before that request runs.
        batch.clear();
        for (;;) {
            auto next = reader.next();
            if (next.error) {
                std::fprintf(stderr, "torchpool worker: unreadable data from the pool: %s\n",
                             next.error.message().c_str());
                return 2;
            }
            if (!next.has_frame()) {
                break;
            }
            auto decoded = wire::decode_view(next.words, &memory);
            if (auto* bad = std::get_if<wire::decode_error>(&decoded)) {
                std::fprintf(stderr, "torchpool worker: malformed message from the pool: %s\n",
                             bad->what.c_str());
                return 2;
            }
            if (auto* req = std::get_if<wire::request_view>(&decoded)) {
                batch.emplace_back(std::move(*req));
                continue;
            }
            auto& msg = std::get<wire::message>(decoded);
            if (auto* cancel = std::get_if<wire::cancel_msg>(&msg)) {
                if (in_batch(cancel->id)) {
                    cancelled.insert(cancel->id);  // else it was answered already
                }
            } else if (auto* f = std::get_if<wire::fault_msg>(&msg)) {
                if (faults_enabled) {
                    faults[f->task_id] = f->what;
                }
            } else if (auto* released = std::get_if<wire::release_msg>(&msg)) {
                memory.release(*released);
            } else {
                batch.emplace_back(std::move(msg));
            }
        }
        for (auto& item : batch) {
            if (auto* msg = std::get_if<wire::message>(&item)) {
                if (std::holds_alternative<wire::shutdown_msg>(*msg)) {
                    return 0;
                }
                if (const auto* beat = std::get_if<wire::heartbeat_msg>(msg)) {
                    // Answered between tasks, so the pool knows this loop still turns.
                    if (!write_all(fd, wire::encode(*beat).asBytes())) {
                        return 0;
                    }
                }
                continue;
            }
            const auto& req = std::get<wire::request_view>(item);
            // Every request gets exactly one reply, in order, even one that is not run.
            outgoing_reply reply{.id = req.id};
            if (cancelled.erase(req.id) > 0) {
                reply = not_run(req.id, std::string(wire::cancelled_error),
                                "cancelled by the caller before it started");
            } else if (past(req.deadline_ns)) {
                reply = not_run(req.id, "torchpool::deadline_exceeded",
                                "its deadline passed before it started");
            } else if (auto f = faults.find(req.id);
                       f != faults.end() && !detail::provoke(fd, f->second)) {
                faults.erase(f);
                reply = not_run(req.id, "torchpool::injected_fault",
                                "the pool injected this failure (pool_params::faults)");
            } else {
                if (f != faults.end()) {
                    faults.erase(f);
                }
                reply = run(state_->handlers, req, inbox, memory);
                cancelled.erase(req.id);
                reply.placed = memory.place(reply.value.tensors);
            }
            if (!wire::encode_to(reply.view(), [fd](std::span<const iovec> parts) {
                    return send_all(fd, parts);
                })) {
                return 0;  // the pool went away while we worked
            }
        }
    }
}

}  // namespace torchpool::worker
