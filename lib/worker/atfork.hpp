// The fork server's copy of the handlers that libraries register with pthread_atfork.
//
// glibc's fork() runs them (prepare in the parent, then parent or child), but the fork
// server cannot use fork(): its workers must be the pool's children (clone3 with
// CLONE_PARENT, see posix::create_sibling). So the worker SDK interposes glibc's
// registration function, __register_atfork (what pthread_atfork calls), keeps a copy of
// each registration (and passes it on to glibc, so fork() in a worker still runs them),
// and runs them around its own clone3 in the order fork() would.
#pragma once

namespace torchpool::worker::detail {

/// False in a ThreadSanitizer build, where the registrations are not copied (its runtime
/// registers handlers before anything can be interposed), so none is run.
bool atfork_handlers_known() noexcept;

/// Before the clone: every prepare handler, the last registered first.
void run_atfork_prepare() noexcept;
/// After it, in the parent: every parent handler, in registration order.
void run_atfork_parent() noexcept;
/// After it, in the child: every child handler, in registration order.
void run_atfork_child() noexcept;

}  // namespace torchpool::worker::detail
