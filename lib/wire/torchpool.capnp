# The one wire protocol between a torchpool supervisor and its workers.
#
# Every message is an Envelope, sent with Cap'n Proto's standard stream framing (segment
# table, then segments) over the worker's channel (a Unix stream socket on fd 3). Messages
# are serialized only: neither side runs a KJ event loop.
@0xaec74ca5d6547ed0;

$import "/capnp/c++.capnp".namespace("torchpool::wire::schema");

enum DType {
  float32 @0;
  float64 @1;
  float16 @2;
  bfloat16 @3;
  int64 @4;
  int32 @5;
  int16 @6;
  int8 @7;
  uint8 @8;
  bool @9;
}

struct Tensor {
  dtype @0 :DType;
  shape @1 :List(Int64);
  # Contiguous, row-major, native byte order; length is product(shape) * size of dtype.
  union {
    # In the message itself (small tensors).
    data @2 :Data;
    # In shared memory: in a request, the pool's input memory (the memfd a worker finds on
    # the descriptor named by TORCHPOOL_INPUTS_FD, mapped read-only); in a reply, the
    # worker's output memory (the memfd it sent with its hello).
    shared @3 :SharedBytes;
  }
}

struct SharedBytes {
  offset @0 :UInt64;
  length @1 :UInt64;
}

struct Hello {
  # First message of every worker, sent once it can take requests. A worker that declares
  # the capability "shared-memory" sends its output memory with it (SCM_RIGHTS): a memfd
  # whose size is sealed (F_SEAL_SHRINK, F_SEAL_GROW), where its replies place tensors.
  pid @0 :Int32;
  protocolVersion @1 :UInt32;
  capabilities @2 :List(Text);
  # Method names the worker serves.
  methods @3 :List(Text);
}

struct Request {
  id @0 :UInt64;
  method @1 :Text;
  # CLOCK_MONOTONIC time in nanoseconds after which the caller has given up; 0 = none.
  deadlineNs @2 :UInt64;
  payload @3 :Data;
  tensors @4 :List(Tensor);
}

struct Error {
  # What kind of failure, e.g. the C++ exception type the handler threw.
  type @0 :Text;
  message @1 :Text;
}

struct Reply {
  id @0 :UInt64;
  result :union {
    ok @1 :Void;
    error @2 :Error;
  }
  payload @3 :Data;
  tensors @4 :List(Tensor);
}

struct Cancel {
  id @0 :UInt64;
}

struct Heartbeat {
  sequence @0 :UInt64;
}

struct Shutdown {}

struct ForkRequest {
  # Pool -> fork server: start one worker for this slot of the pool.
  sequence @0 :UInt64;
  slot @1 :UInt32;
}

struct ForkReply {
  # Fork server -> pool, with three descriptors attached (SCM_RIGHTS) on success: the
  # worker's pidfd, the pool's end of its channel, the read end of its stdout/stderr pipe.
  sequence @0 :UInt64;
  pid @1 :Int32;
  # Empty on success; else why no worker was made.
  error @2 :Text;
  # Not a worker but a helper of the fork server (a sibling that forks workers too), with
  # one descriptor attached: its pidfd. The pool reaps it.
  helper @3 :Bool;
}

struct Fault {
  # Pool -> worker, right before the request it applies to, only when the pool's fault
  # injection is on (for users' tests): the worker provokes this failure for that task.
  taskId @0 :UInt64;
  kind @1 :UInt8;
  # The signal, exit code, bytes or milliseconds, by kind (torchpool::fault::kind).
  value @2 :UInt64;
}

struct Release {
  # Pool -> worker: blocks of the worker's output memory (by the offsets its replies gave)
  # that the pool no longer holds; the worker may write there again.
  offsets @0 :List(UInt64);
}

struct Envelope {
  union {
    hello @0 :Hello;
    request @1 :Request;
    reply @2 :Reply;
    cancel @3 :Cancel;
    heartbeat @4 :Heartbeat;
    shutdown @5 :Shutdown;
    forkRequest @6 :ForkRequest;
    forkReply @7 :ForkReply;
    fault @8 :Fault;
    release @9 :Release;
  }
}
