// The driver's per-process I/O with no process behind it: a pipe stands for the pidfd (it
// becomes readable when "the process exits") and a scripted reaper says how it ended. What
// is checked is the one-reaper contract: every byte the process wrote reaches the log before
// its exit is told, whether the exit comes before or after the last read; a spurious wake-up
// waits again; a completion of a retired process's descriptors does nothing.
#include "driver/process_io.hpp"

#include <boost/asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <deque>
#include <string>

#include <fcntl.h>
#include <unistd.h>

using namespace torchpool;
using namespace torchpool::detail;

namespace {

// What the fake reaper answers, call by call (nullopt: not exited yet, a spurious wake-up).
std::deque<std::optional<core::exit_status>> script;
int reap_calls = 0;

std::optional<core::exit_status> scripted_reap(int) {
    ++reap_calls;
    REQUIRE_FALSE(script.empty());
    auto status = script.front();
    script.pop_front();
    return status;
}
bool no_signal(int, int) noexcept {
    return true;
}
bool not_exited(int) {
    return false;
}

struct pipe_fds {
    pipe_fds() {
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        REQUIRE(::fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0);
        read = fds[0];
        write = fds[1];
    }
    ~pipe_fds() {
        if (write >= 0) {
            ::close(write);
        }
    }
    void put(const std::string& bytes) const {
        REQUIRE(::write(write, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    }
    int read = -1;  // owned by the process_io once taken
    int write = -1;
};

// One process's I/O, finished as the pool finishes it: once its exit is known and no output
// read is in flight, what the pipe still holds is drained, then the exit is told.
struct harness {
    harness() {
        reap_calls = 0;
        script.clear();
    }
    void take(const pipe_fds& exit_signal, const pipe_fds& output) {
        io.take(exit_signal.read, output.read);
        const auto keep = std::make_shared<int>(0);
        io.watch_exit(keep, [this] { finish_when_read(); });
        io.read_output(
            keep, [this](std::string_view bytes) { seen.append(bytes); },
            [this] { finish_when_read(); });
    }
    void finish_when_read() {
        if (!io.exit() || io.reading_output()) {
            return;
        }
        io.drain_output([this](std::string_view bytes) { seen.append(bytes); });
        told.push_back(*io.exit());
        seen_at_exit.push_back(seen);
        io.retire();
    }

    boost::asio::io_context context;
    process_io io{context.get_executor(), {scripted_reap, no_signal, not_exited}};
    std::string seen;
    std::vector<core::exit_status> told;
    std::vector<std::string> seen_at_exit;
};

std::string output_of(std::size_t bytes) {
    std::string s;
    for (std::size_t i = 0; s.size() < bytes; ++i) {
        s += "line " + std::to_string(i) + "\n";
    }
    return s;
}

}  // namespace

TEST_CASE("every byte written before the exit is read before the exit is told, in either order",
          "[process_io]") {
    // More than one read's buffer (4 KiB), so that the exit arrives with reads still to come.
    const std::string output = output_of(12 * 1024);
    for (const bool exit_first : {false, true}) {
        harness h;
        pipe_fds exit_signal, out;
        script.push_back(core::exit_status{.signal = 9});
        h.take(exit_signal, out);
        if (exit_first) {
            exit_signal.put("x");
            out.put(output);
        } else {
            out.put(output);
            exit_signal.put("x");
        }
        h.context.run();
        REQUIRE(h.told.size() == 1);
        CHECK(h.told[0].signal == 9);
        CHECK(h.seen_at_exit[0] == output);
    }
}

TEST_CASE("an exit known before any read of the output drains the pipe first", "[process_io]") {
    harness h;
    pipe_fds exit_signal, out;
    script.push_back(core::exit_status{.exit_code = 3});
    h.io.take(exit_signal.read, out.read);
    h.io.watch_exit(std::make_shared<int>(0), [&h] { h.finish_when_read(); });
    out.put("its last words\n");
    exit_signal.put("x");
    h.context.run();
    REQUIRE(h.told.size() == 1);
    CHECK(h.told[0].exit_code == 3);
    CHECK(h.seen_at_exit[0] == "its last words\n");
}

TEST_CASE("output that ends before the exit is all there, and the exit still comes",
          "[process_io]") {
    harness h;
    pipe_fds exit_signal, out;
    script.push_back(core::exit_status{.exit_code = 0});
    h.take(exit_signal, out);
    out.put("done\n");
    ::close(out.write);  // the process closed its output (EOF), then exits
    out.write = -1;
    h.context.poll();
    CHECK(h.told.empty());
    exit_signal.put("x");
    h.context.run();
    REQUIRE(h.told.size() == 1);
    CHECK(h.seen_at_exit[0] == "done\n");
}

TEST_CASE("a spurious wake-up of the pidfd waits again, and the exit is told once",
          "[process_io]") {
    harness h;
    pipe_fds exit_signal, out;
    script.push_back(std::nullopt);  // woken, but not exited yet
    script.push_back(core::exit_status{.exit_code = 1});
    h.take(exit_signal, out);
    exit_signal.put("x");
    h.context.run();
    CHECK(reap_calls == 2);
    REQUIRE(h.told.size() == 1);
    CHECK(h.told[0].exit_code == 1);
}

TEST_CASE("completions for a retired process do nothing while its successor's exit is told",
          "[process_io]") {
    harness h;
    pipe_fds old_exit, old_out;
    h.take(old_exit, old_out);
    old_out.put("old\n");
    old_exit.put("x");
    h.io.retire();  // gone before its completions ran: they find another generation
    CHECK_FALSE(h.io.alive());

    pipe_fds new_exit, new_out;
    script.push_back(core::exit_status{.exit_code = 7});
    h.take(new_exit, new_out);
    new_out.put("new\n");
    new_exit.put("x");
    h.context.run();
    CHECK(reap_calls == 1);  // the old pidfd was never reaped
    REQUIRE(h.told.size() == 1);
    CHECK(h.told[0].exit_code == 7);
    CHECK(h.seen_at_exit[0] == "new\n");
}
