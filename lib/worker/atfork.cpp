#include "atfork.hpp"

#include <atomic>
#include <cstddef>
#include <dlfcn.h>

namespace {

using handler = void (*)();

struct registration {
    handler prepare;
    handler parent;
    handler child;
};

// Plain, zero-initialized storage: libraries register from their constructors, which run
// before this program's static initializers.
constexpr std::size_t capacity = 512;
registration registrations[capacity];
std::atomic<std::size_t> registered{0};
std::atomic_flag appending = ATOMIC_FLAG_INIT;

using register_function = int (*)(handler, handler, handler, void*);

// A handler of a library unloaded since (dlclose) is skipped: its address no longer
// belongs to a loaded object. _dl_find_object answers from a sorted table of the loaded
// objects; dladdr would also search the object's symbols for the nearest one, a linear
// scan of LibTorch's that cost about 0.5 ms per fork.
bool loaded(handler h) {
    dl_find_object found;
    return h != nullptr && ::_dl_find_object(reinterpret_cast<void*>(h), &found) == 0;
}

}  // namespace

// glibc's pthread_atfork (a static stub in every object that calls it) calls this; the
// definition in the worker executable comes first in symbol lookup, so every library's
// registration passes here. Not under ThreadSanitizer, whose runtime registers its own
// handlers while it starts, before dlsym can be called.
#if !defined(__SANITIZE_THREAD__)
extern "C" int __register_atfork(handler prepare, handler parent, handler child, void* dso) {
    static const auto glibc =
        reinterpret_cast<register_function>(::dlsym(RTLD_NEXT, "__register_atfork"));
    if (glibc == nullptr) {
        return 12;  // ENOMEM, as glibc says when it cannot register
    }
    const int result = glibc(prepare, parent, child, dso);
    if (result == 0) {
        while (appending.test_and_set(std::memory_order_acquire)) {
        }
        const std::size_t i = registered.load(std::memory_order_relaxed);
        if (i < capacity) {
            registrations[i] = {prepare, parent, child};
            registered.store(i + 1, std::memory_order_release);
        }
        appending.clear(std::memory_order_release);
    }
    return result;
}
#endif

namespace torchpool::worker::detail {

bool atfork_handlers_known() noexcept {
#if defined(__SANITIZE_THREAD__)
    return false;
#else
    return true;
#endif
}

void run_atfork_prepare() noexcept {
    for (std::size_t i = registered.load(std::memory_order_acquire); i-- > 0;) {
        if (loaded(registrations[i].prepare)) {
            registrations[i].prepare();
        }
    }
}

void run_atfork_parent() noexcept {
    const std::size_t n = registered.load(std::memory_order_acquire);
    for (std::size_t i = 0; i < n; ++i) {
        if (loaded(registrations[i].parent)) {
            registrations[i].parent();
        }
    }
}

void run_atfork_child() noexcept {
    const std::size_t n = registered.load(std::memory_order_acquire);
    for (std::size_t i = 0; i < n; ++i) {
        if (loaded(registrations[i].child)) {
            registrations[i].child();
        }
    }
}

}  // namespace torchpool::worker::detail
