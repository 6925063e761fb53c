// The pool as a real host runs it: io threads that come and go, a host that is killed.
#include "../support/process_support.hpp"
#include <torchpool/pool.hpp>

#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <set>
#include <sstream>
#include <system_error>
#include <thread>

#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace torchpool;
using namespace torchpool::test;

namespace {

worker_params fake_worker_started_by(start_mode mode) {
    auto params = fake_worker();
    params.start = mode;
    return params;
}

const char* mode_name(start_mode mode) {
    return mode == start_mode::fork_server ? "fork server" : "direct";
}

// Waits until the kernel is done with the exit of thread `tid` of this process, children
// reparented (and their parent-death signal sent) included: its /proc entry goes last.
void wait_for_thread_gone(pid_t tid) {
    const auto path = "/proc/self/task/" + std::to_string(tid);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::filesystem::exists(path)) {
        REQUIRE(std::chrono::steady_clock::now() < deadline);
        std::this_thread::yield();
    }
}

}  // namespace

TEST_CASE("workers outlive the host thread that started them", "[process][host]") {
    const auto mode = GENERATE(start_mode::direct, start_mode::fork_server);
    CAPTURE(mode_name(mode));
    constexpr std::size_t n = 4;
    asio::io_context io;
    std::size_t ready = 0;
    pool p(io.get_executor(), {.worker = fake_worker_started_by(mode),
                               .workers = n,
                               .on_worker_event = [&](const worker_event& e) {
                                   ready += e.what == worker_event::kind::ready ? 1 : 0;
                               }});
    std::promise<void> run_done;
    p.async_run([&](boost::system::error_code) { run_done.set_value(); });

    // One io thread starts every worker (and the fork server), then leaves run() and ends,
    // as io threads of a host do.
    pid_t starter_tid = 0;
    std::thread starter([&] {
        starter_tid = static_cast<pid_t>(::syscall(SYS_gettid));
        while (ready < n && io.run_one_for(20s) > 0) {
        }
    });
    starter.join();
    REQUIRE(ready == n);
    wait_for_thread_gone(starter_tid);

    // Another thread carries on. Every worker still serves, and none died.
    io.restart();
    auto guard = asio::make_work_guard(io);
    std::thread runner([&] { io.run(); });
    std::vector<std::future<response>> results;
    for (int i = 0; i < 40; ++i) {
        results.push_back(
            p.async_submit(make_request("echo", std::to_string(i)), asio::use_future));
    }
    for (int i = 0; i < 40; ++i) {
        CHECK(results[i].get().payload == std::to_string(i));
    }
    auto s = asio::post(io, asio::use_future([&] { return p.stats(); })).get();
    CHECK(s.spawned == n);
    CHECK(s.deaths_by_signal == 0);
    CHECK(s.deaths_by_exit == 0);
    CHECK(s.worker_died == 0);
    p.async_shutdown(asio::detached);
    run_done.get_future().wait();
    guard.reset();
    runner.join();
    CHECK(child_pids().empty());
}

TEST_CASE("workers die with their host, even when the host is killed with SIGKILL",
          "[process][host]") {
    const auto mode = GENERATE(start_mode::direct, start_mode::fork_server);
    CAPTURE(mode_name(mode));
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    const pid_t host = ::fork();
    REQUIRE(host >= 0);
    if (host == 0) {
        // The host: a pool of three workers. Once all are ready it gives each a task that
        // blocks forever (so end of stream on the channel cannot be what stops them), then
        // reports their pids (and the fork server's).
        ::close(pipe_fds[0]);
        asio::io_context io{1};
        std::string pids;
        int ready = 0;
        std::optional<pool> p;
        p.emplace(io.get_executor(),
                  pool_params{.worker = fake_worker_started_by(mode),
                              .workers = 3,
                              .on_worker_event = [&](const worker_event& e) {
                                  if (e.what != worker_event::kind::ready) {
                                      return;
                                  }
                                  pids += std::to_string(e.pid) + " ";
                                  if (++ready == 3) {
                                      if (const int server = p->stats().fork_server_pid) {
                                          pids += std::to_string(server) + " ";
                                      }
                                      for (int i = 0; i < 3; ++i) {
                                          p->async_submit(make_request("hang"), asio::detached);
                                      }
                                      (void)!::write(pipe_fds[1], pids.data(), pids.size());
                                      ::close(pipe_fds[1]);
                                  }
                              }});
        p->async_run(asio::detached);
        io.run_for(60s);
        ::_exit(0);
    }
    ::close(pipe_fds[1]);
    std::string text;
    char buffer[256];
    pollfd readable{pipe_fds[0], POLLIN, 0};
    while (::poll(&readable, 1, 20'000) == 1) {
        const ssize_t n = ::read(pipe_fds[0], buffer, sizeof buffer);
        if (n <= 0) {
            break;
        }
        text.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(pipe_fds[0]);
    std::istringstream in(text);
    std::vector<int> pidfds;
    for (int pid; in >> pid;) {
        pidfds.push_back(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
        CHECK(pidfds.back() >= 0);
    }
    REQUIRE(pidfds.size() == (mode == start_mode::fork_server ? 4 : 3));  // + the server

    ::kill(host, SIGKILL);
    ::waitpid(host, nullptr, 0);
    // Each worker's pidfd becomes readable when it has exited.
    for (int fd : pidfds) {
        pollfd exited{fd, POLLIN, 0};
        CHECK(::poll(&exited, 1, 10'000) == 1);
        ::close(fd);
    }
}

TEST_CASE("assigning over a running pool stops it as its destructor would", "[process][host]") {
    run_coroutine([](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), {.worker = fake_worker(), .workers = 2});
        bool first_run_done = false;
        notifier first_run(io.get_executor());
        p.async_run([&](boost::system::error_code) {
            first_run_done = true;
            first_run.notify();
        });
        auto [ec, r] = co_await p.async_submit(make_request("echo", "first"), tuple_awaitable);
        REQUIRE(!ec);
        REQUIRE(child_pids().size() == 2);

        p = pool(io.get_executor(), {.worker = fake_worker(), .workers = 1});
        // The first pool's workers are killed and reaped, and its run completes.
        co_await first_run.until([&] { return first_run_done; });
        CHECK(child_pids().empty());  // the new pool has not been run yet

        p.async_run(asio::detached);
        auto [ec2, r2] = co_await p.async_submit(make_request("echo", "second"), tuple_awaitable);
        CHECK(!ec2);
        CHECK(r2.payload == "second");
        co_await p.async_shutdown(tuple_awaitable);
    });
}

namespace {

// Runs `body` in a child process (limits lowered there stay there) and returns its exit
// code; the child's output goes to ours.
template <class Body>
int in_child_process(Body body) {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        int code = 1;
        try {
            code = body();
        } catch (...) {
            code = 99;
        }
        std::fflush(nullptr);
        ::_exit(code);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    return WEXITSTATUS(status);
}

}  // namespace

TEST_CASE(
    "a pool whose descriptors pass the hard open-file limit fails at once, saying how "
    "to raise it",
    "[process][host][limits]") {
    const int code = in_child_process([] {
        rlimit low{256, 256};
        if (::setrlimit(RLIMIT_NOFILE, &low) != 0) {
            return 2;
        }
        asio::io_context io;
        try {
            pool p(io.get_executor(), {.worker = fake_worker(), .workers = 100});
        } catch (const std::system_error& e) {
            const std::string what = e.what();
            const bool named = e.code() == std::errc::too_many_files_open &&
                               what.find("RLIMIT_NOFILE") != std::string::npos &&
                               what.find("ulimit -Hn") != std::string::npos &&
                               what.find("100 workers") != std::string::npos;
            std::printf("%s\n", what.c_str());
            return named ? 0 : 3;
        }
        return 4;  // the pool was made: it would have failed later, silently
    });
    CHECK(code == 0);
}

TEST_CASE("hundreds of workers start and serve under a soft open-file limit of 1024",
          "[process][host][limits]") {
    const auto mode = GENERATE(start_mode::direct, start_mode::fork_server);
    CAPTURE(mode_name(mode));
    const int code = in_child_process([mode] {
        rlimit limit{};
        ::getrlimit(RLIMIT_NOFILE, &limit);
        limit.rlim_cur = 1024;
        if (limit.rlim_max < 4096 || ::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
            return 2;
        }
        constexpr std::size_t n = 1024;
        asio::io_context io;
        std::string notice;
        std::size_t start_failures = 0, ready = 0, answered = 0;
        std::set<int> pids;
        std::optional<pool> p;
        std::string worker_limits;
        // Once every worker is ready, the tasks go out at once, one to each idle worker.
        auto submit_all = [&] {
            for (std::size_t i = 0; i < n; ++i) {
                p->async_submit(make_request("pid"), [&](boost::system::error_code ec, response r) {
                    answered += ec ? 0 : 1;
                    pids.insert(r.worker_pid);
                    if (answered == n) {
                        // A worker's own limit, while it still runs.
                        std::ifstream in("/proc/" + std::to_string(r.worker_pid) + "/limits");
                        for (std::string line; std::getline(in, line);) {
                            if (line.starts_with("Max open files")) {
                                worker_limits = line;
                            }
                        }
                        p->async_shutdown(asio::detached);
                    }
                });
            }
        };
        p.emplace(io.get_executor(),
                  pool_params{.worker = fake_worker_started_by(mode),
                              .workers = n,
                              .queue_limit = n,
                              .on_worker_event = [&](const worker_event& e) {
                                  if (e.what == worker_event::kind::notice) {
                                      notice = e.description;
                                  } else if (e.what == worker_event::kind::start_failed) {
                                      ++start_failures;
                                  } else if (e.what == worker_event::kind::ready && ++ready == n) {
                                      submit_all();
                                  }
                              }});
        p->async_run(asio::detached);
        io.run_for(120s);
        const auto s = p->stats();
        std::printf(
            "%zu answered by %zu workers; %llu failed starts; limit %llu; a worker's: "
            "%s; notice: %s\n",
            answered, pids.size(), static_cast<unsigned long long>(s.failed_starts),
            static_cast<unsigned long long>(s.open_files_limit), worker_limits.c_str(),
            notice.c_str());
        rlimit after{};
        ::getrlimit(RLIMIT_NOFILE, &after);
        const bool ok = answered == n && s.failed_starts == 0 && start_failures == 0 &&
                        s.spawned == n && after.rlim_cur > 1024 &&
                        s.open_files_limit == after.rlim_cur &&
                        notice.find("from 1024 to") != std::string::npos &&
                        worker_limits.find(" 1024 ") != std::string::npos;
        return ok ? 0 : 3;
    });
    if (code == 2) {
        WARN("skipped: the hard open-file limit here is under 4096");
        return;
    }
    CHECK(code == 0);
}

TEST_CASE("the memory attached to a failure is the worker's own", "[process][host][memory]") {
    const auto mode = GENERATE(start_mode::direct, start_mode::fork_server);
    CAPTURE(mode_name(mode));
    // The host holds 256 MiB, which a figure copied from it (ru_maxrss) would show.
    std::vector<char> host_heap(256u << 20, 1);
    run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
        pool p(io.get_executor(), {.worker = fake_worker_started_by(mode), .workers = 1});
        p.async_run(asio::detached);
        // The worker allocates 64 MiB and answers; then it hangs, and at the deadline the
        // pool reads its memory and stops it.
        auto [allocated, unused] =
            co_await p.async_submit(make_request("allocate", "64"), tuple_awaitable);
        REQUIRE(!allocated);
        auto [ec, r] =
            co_await p.async_submit(make_request("hang").with_timeout(300ms), tuple_awaitable);
        CHECK(ec == errc::timeout);
        REQUIRE(r.diagnostics.memory);
        const auto& m = *r.diagnostics.memory;
        constexpr std::uint64_t mib = 1 << 20;
#if defined(__SANITIZE_THREAD__)
        // The worker is instrumented too: ThreadSanitizer's shadow of the 64 MiB it touched
        // is its own memory as well (about as much again), still far from the host's.
        constexpr std::uint64_t own_at_most = 160 * mib;
#else
        constexpr std::uint64_t own_at_most = 80 * mib;
#endif
        CAPTURE(m.private_bytes / mib, m.pss_bytes / mib, m.rss_bytes / mib);
        CHECK(m.private_bytes >= 64 * mib);
        CHECK(m.private_bytes < own_at_most);
        CHECK(m.pss_bytes >= m.private_bytes);
        CHECK(m.rss_bytes >= m.pss_bytes);
        CHECK(m.rss_bytes < own_at_most + 40 * mib);
        CHECK_THAT(r.diagnostics.summary, Catch::Contains("MiB of its own (private"));
        co_await p.async_shutdown(tuple_awaitable);
    });
    CHECK(host_heap[12345] == 1);
}
