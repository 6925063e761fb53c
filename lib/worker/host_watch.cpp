#include "host_watch.hpp"

#include "../posix/clone.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>

#include <signal.h>
#include <unistd.h>

namespace torchpool::worker::detail {

namespace {

volatile sig_atomic_t host_pid = 0;

void die_if_host_gone() noexcept {
    if (host_pid > 0 && ::getppid() != static_cast<pid_t>(host_pid)) {
        ::kill(::getpid(), SIGKILL);
    }
}

extern "C" void on_parent_thread_end(int) {
    const int saved = errno;
    die_if_host_gone();
    errno = saved;
}

}  // namespace

void die_with_host() {
    const char* text = std::getenv(posix::host_pid_variable);
    if (!text) {
        return;
    }
    char* end = nullptr;
    const long pid = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || pid <= 0) {
        return;
    }
    host_pid = static_cast<sig_atomic_t>(pid);
    struct sigaction action {};
    action.sa_handler = on_parent_thread_end;
    action.sa_flags = SA_RESTART;
    ::sigemptyset(&action.sa_mask);
    ::sigaction(posix::parent_death_signal, &action, nullptr);
    die_if_host_gone();
}

}  // namespace torchpool::worker::detail
