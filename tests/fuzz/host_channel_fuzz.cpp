// Fuzz target: the host reading its workers' channels. The fuzzer plays the workers of a
// real pool core (two workers, one task sent ahead to each, heartbeats on): bytes in
// arbitrary chunks go through the frame reader and the decoder the driver uses
// (lib/driver/channel_intake.hpp) into the core, mixed with whole messages built from the
// input (replies to the tasks in flight, errors, hellos, heartbeats, messages a worker must
// not send), channel ends, exits, time passing, new tasks and cancellations. The harness
// keeps the driver's rules: nothing is read from a channel after a protocol error or its end,
// a process is reaped once, a spawn is answered with a new process.
//
// Each worker has output memory (a sealed memfd) as the driver holds it (worker_outputs), and
// replies may place tensors there at offsets and lengths of the input's choosing; results are
// held and let go as callers do.
//
// Oracles beyond "no crash, no sanitizer report": a task completes at most once; after stop,
// once every process is reaped, the run finishes and every task has completed exactly once;
// every tensor a result holds in shared memory lies inside its worker's output memory, no two
// held tensors of one worker's memory overlap, and the bytes held add up to what the pool
// counts.
#include "core/pool_core.hpp"
#include "driver/channel_intake.hpp"
#include "driver/worker_outputs.hpp"
#include "fuzz_input.hpp"
#include "shm/arena.hpp"
#include "wire/codec.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <signal.h>
#include <unistd.h>

using namespace torchpool;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t workers = 2;
constexpr std::size_t max_frame = 4096;
constexpr std::size_t output_memory = 64 * 1024;

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "host_channel_fuzz: %s\n", what);
    std::abort();
}

using fuzz::input;

struct process {
    bool alive = false;    // spawned and not reaped
    bool reading = false;  // its channel is read: not ended, nothing broke it
    wire::frame_reader reader{max_frame};
    std::shared_ptr<shm::mapping> memory;  // its output memory, as the worker maps it
    std::shared_ptr<detail::worker_outputs> outputs;
};

struct harness {
    core::pool_core core;
    core::time_point now{std::chrono::seconds(1000)};
    process slots[workers];
    std::map<core::task_id, int> completions;
    std::map<core::task_id, core::slot_id> sent;  // the slot a task was last sent to
    std::vector<response> held;                   // results callers still hold
    detail::held_counter held_bytes = std::make_shared<std::atomic<std::uint64_t>>(0);
    core::task_id next_task = 1;
    int next_pid = 100;
    bool finished = false;

    explicit harness(const pool_params& params) : core(params) {}

    // Does what the driver does with each action the core decided.
    void drain() {
        while (!core.actions().empty()) {
            auto a = std::move(core.actions().front());
            core.actions().pop_front();
            if (auto* spawn = std::get_if<core::spawn_action>(&a)) {
                auto& p = slots[spawn->slot];
                if (p.alive) {
                    fail("a spawn for a slot whose process was not reaped");
                }
                p = process{};
                p.alive = p.reading = true;
                give_output_memory(p);
                core.on_spawned(spawn->slot, next_pid++, now);
            } else if (auto* send = std::get_if<core::send_request_action>(&a)) {
                sent[send->task] = send->slot;
            } else if (auto* done = std::get_if<core::complete_action>(&a)) {
                if (++completions[done->task] > 1) {
                    fail("a task completed twice");
                }
                if (done->result && !done->result->tensors.empty()) {
                    held.push_back(std::move(*done->result));
                    check_held();
                }
            } else if (std::holds_alternative<core::run_finished_action>(a)) {
                finished = true;
            }
        }
    }

    void give_output_memory(process& p) {
        p.memory = std::get<std::shared_ptr<shm::mapping>>(
            shm::mapping::create("fuzz-outputs", output_memory, shm::writers::anyone));
        p.outputs = std::get<std::shared_ptr<detail::worker_outputs>>(
            detail::worker_outputs::adopt(posix::unique_fd(::dup(p.memory->fd())), output_memory,
                                          held_bytes, [](detail::worker_outputs&) {}));
    }

    // Held tensors lie inside their worker's memory, do not overlap, and add up.
    void check_held() const {
        std::map<std::pair<const void*, const std::byte*>, std::size_t> ranges;
        std::uint64_t total = 0;
        for (const auto& r : held) {
            for (const auto& t : r.tensors) {
                if (!t.shared) {
                    continue;
                }
                const auto b = t.shared.bytes();
                const auto* region = t.shared.region().get();
                if (b.data() < region->base() ||
                    b.data() + b.size() > region->base() + output_memory) {
                    fail("a held tensor lies outside its worker's output memory");
                }
                ranges[{region->space(), b.data()}] = b.size();
                total += b.size();
            }
        }
        const void* space = nullptr;
        const std::byte* end = nullptr;
        for (const auto& [at, size] : ranges) {
            if (at.first == space && at.second < end) {
                fail("two held tensors overlap in one worker's output memory");
            }
            space = at.first;
            end = at.second + size;
        }
        if (total != held_bytes->load()) {
            fail("the bytes held do not add up to what the pool counts");
        }
    }

    void let_go(std::uint8_t which) {
        if (!held.empty()) {
            held.erase(held.begin() + which % held.size());
            check_held();
        }
    }

    void feed(core::slot_id s, std::string_view bytes) {
        auto& p = slots[s];
        if (!p.alive || !p.reading) {
            return;
        }
        p.reader.append(std::as_bytes(std::span(bytes.data(), bytes.size())));
        p.reading = detail::take_messages(
            p.reader, max_frame, [&] { return p.outputs.get(); },
            [&](wire::message&& m) {
                core.on_message(s, std::move(m), now);
                return true;
            },
            [&](std::string what) { core.on_protocol_error(s, std::move(what), now); });
    }

    // A whole message, in chunks of the input's choosing.
    void feed_frame(core::slot_id s, const wire::frame& f, std::size_t chunk) {
        const auto bytes = f.asBytes();
        const std::string_view all(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
        chunk = chunk == 0 ? all.size() : chunk;
        for (std::size_t at = 0; at < all.size(); at += chunk) {
            feed(s, all.substr(at, chunk));
        }
    }

    void end_channel(core::slot_id s) {
        auto& p = slots[s];
        if (!p.alive || !p.reading) {
            return;
        }
        p.reading = false;
        if (p.reader.finish()) {
            core.on_protocol_error(s, "ended its channel in the middle of a message", now);
        } else {
            core.on_channel_closed(s, "closed its channel", now);
        }
    }

    void reap(core::slot_id s, const core::exit_status& status) {
        auto& p = slots[s];
        if (!p.alive) {
            return;
        }
        end_channel(s);
        p.alive = false;
        p.outputs->orphan();
        p.outputs.reset();
        core.on_exit(s, status, now);
    }

    void advance(std::chrono::milliseconds d) {
        now += d;
        core.on_timer(now);
    }

    core::task_id pick_task(std::uint8_t b) const {
        if (sent.empty() || b >= 240) {
            return b;  // perhaps no task at all
        }
        auto it = sent.begin();
        std::advance(it, b % sent.size());
        return it->first;
    }
};

std::vector<tensor> tensors_from(input& in) {
    std::vector<tensor> out;
    const std::size_t count = in.byte() % 3;
    for (std::size_t i = 0; i < count; ++i) {
        const auto type = static_cast<dtype>(in.byte() % 10);
        std::vector<std::int64_t> shape;
        const std::size_t rank = in.byte() % 4;
        for (std::size_t d = 0; d < rank; ++d) {
            shape.push_back(static_cast<std::int8_t>(in.byte()));  // negatives too
        }
        out.emplace_back(type, std::move(shape), in.bytes(in.byte()));
    }
    return out;
}

wire::message message_from(input& in, const harness& h) {
    switch (in.byte() % 8) {
        case 0:
        case 1: {
            wire::reply_msg r{.id = h.pick_task(in.byte()), .ok = (in.byte() & 1) == 0};
            if (!r.ok) {
                r.error_type = in.bytes(in.byte() % 16);
                r.error_message = in.bytes(in.byte() % 64);
            }
            r.payload = in.bytes(in.byte());
            r.tensors = tensors_from(in);
            return r;
        }
        case 2: {
            wire::hello_msg hello{
                .pid = static_cast<int>(in.byte()),
                .protocol_version = in.byte() < 240 ? wire::protocol_version : in.byte()};
            if ((in.byte() & 1) != 0) {
                hello.capabilities.emplace_back(wire::answers_heartbeats);
            }
            return hello;
        }
        case 3:
            return wire::heartbeat_msg{.sequence = in.byte()};
        case 4:
            return wire::request_msg{.id = in.byte(), .method = in.bytes(in.byte() % 8)};
        case 5:
            return wire::cancel_msg{.id = in.byte()};
        case 6:
            return wire::fork_reply_msg{.sequence = in.byte(), .pid = in.byte()};
        default:
            return wire::shutdown_msg{};
    }
}

wire::frame encoded(const wire::message& m) {
    return std::visit([](const auto& v) { return wire::encode(v); }, m);
}

// A reply whose tensors are placed in output memory at the input's offsets and lengths
// (near the memory's end, past it, overlapping, not matching the shape).
std::string reply_in_shared_memory(input& in, const harness& h) {
    std::vector<tensor_view> tensors;
    std::vector<std::optional<wire::shared_ref>> placed;
    const std::size_t count = in.byte() % 4;
    for (std::size_t i = 0; i < count; ++i) {
        tensor_view t;
        t.type = static_cast<dtype>(in.byte() % 10);
        const std::size_t rank = in.byte() % 3;
        for (std::size_t d = 0; d < rank; ++d) {
            t.shape.push_back(static_cast<std::int8_t>(in.byte()));
        }
        const std::uint64_t offset = std::uint64_t{in.byte()} * 512 + in.byte();
        std::uint64_t length = std::uint64_t{in.byte()} * 64;
        if (in.byte() == 255) {
            length = ~std::uint64_t{0} - offset + 1;  // wraps past the end of the address space
        }
        tensors.push_back(std::move(t));
        placed.emplace_back(wire::shared_ref{offset, length});
    }
    std::string out;
    wire::encode_to({.id = h.pick_task(in.byte()), .tensors = tensors, .placed = placed},
                    [&](std::span<const iovec> parts) {
                        for (const auto& part : parts) {
                            out.append(static_cast<const char*>(part.iov_base), part.iov_len);
                        }
                        return true;
                    });
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    input in(data, size);
    pool_params params{.worker = {.executable = "/bin/true"}, .workers = workers};
    params.prefetch = 1;
    params.queue_limit = 8;
    params.max_frame_bytes = max_frame;
    params.heartbeat_interval = 100ms;
    params.heartbeat_timeout = 100ms;
    params.task_timeout = 1000ms;
    params.cancel_grace = 50ms;
    params.stop_grace = 100ms;
    params.log_tail_bytes = 256;
    harness h(params);
    if (!h.core.start(h.now)) {
        fail("the pool does not start");
    }
    h.drain();
    // Both workers ready, answering heartbeats; four tasks: one running and one sent ahead
    // on each.
    for (core::slot_id s = 0; s < workers; ++s) {
        h.feed_frame(s,
                     wire::encode(wire::hello_msg{.pid = 100 + static_cast<int>(s),
                                                  .protocol_version = wire::protocol_version,
                                                  .capabilities = {"heartbeat"}}),
                     0);
    }
    h.drain();
    for (int i = 0; i < 4; ++i) {
        h.core.submit(h.next_task++, "echo", core::task_options{}, h.now);
        h.drain();
    }
    for (int steps = 0; !in.empty() && steps < 256; ++steps) {
        const std::uint8_t op = in.byte();
        const core::slot_id s = (op / 10) % workers;
        switch (op % 10) {
            case 0:
                h.feed(s, in.bytes(in.byte()));
                break;
            case 1:
            case 2: {
                const auto m = message_from(in, h);
                h.feed_frame(s, encoded(m), in.byte());
                break;
            }
            case 3: {
                const std::uint8_t what = in.byte();
                if (what < 64) {
                    h.core.on_log(s, in.bytes(in.byte()));
                } else if (what < 128) {
                    h.let_go(in.byte());
                } else {
                    const auto bytes = reply_in_shared_memory(in, h);
                    const std::size_t chunk = std::max<std::size_t>(in.byte(), 1);
                    for (std::size_t at = 0; at < bytes.size(); at += chunk) {
                        h.feed(s, std::string_view(bytes).substr(at, chunk));
                    }
                }
                break;
            }
            case 4:
                h.end_channel(s);
                break;
            case 5: {
                const std::uint8_t how = in.byte();
                core::exit_status status;
                if (how & 1) {
                    status.signal = how >> 1 == 0 ? SIGKILL : (how >> 1) % 31 + 1;
                    status.core_dumped = (how & 2) != 0;
                } else {
                    status.exit_code = how >> 1;
                }
                h.reap(s, status);
                break;
            }
            case 6:
                h.advance(std::chrono::milliseconds(in.byte() * 5));
                break;
            case 7:
                h.core.submit(
                    h.next_task++, in.byte() < 128 ? "echo" : "",
                    core::task_options{.timeout = std::chrono::milliseconds(in.byte()),
                                       .retries = in.byte() % 3u,
                                       .priority = static_cast<std::uint8_t>(in.byte() % 3)},
                    h.now);
                break;
            case 8:
                h.core.cancel_task(h.pick_task(in.byte()),
                                   (in.byte() & 1) != 0 ? boost::asio::cancellation_type::terminal
                                                        : boost::asio::cancellation_type::partial,
                                   h.now);
                break;
            default:
                if (const auto next = h.core.next_deadline()) {
                    h.now = std::max(h.now, *next);
                    h.core.on_timer(h.now);
                }
                break;
        }
        h.drain();
    }
    // Stop, and be the reaper: every process exits, time passes until the run is finished.
    h.core.stop(h.now);
    h.drain();
    for (int round = 0; round < 100 && !h.finished; ++round) {
        for (core::slot_id s = 0; s < workers; ++s) {
            h.reap(s, {.signal = SIGKILL});
        }
        h.drain();
        h.advance(1000ms);
        h.drain();
    }
    if (!h.finished) {
        fail("the run does not finish once every process is reaped");
    }
    h.held.clear();
    if (h.held_bytes->load() != 0) {
        fail("bytes still counted as held once every result was let go");
    }
    for (core::task_id id = 1; id < h.next_task; ++id) {
        if (h.completions[id] != 1) {
            fail("a task never completed");
        }
    }
    return 0;
}
