#!/usr/bin/env bash
# The embedding example end to end: start torchpool-line-service on a free port, send it
# requests over TCP from two connections at once (one of which crashes a worker), check
# each answer, then stop it with SIGTERM and check that it exits 0 with no worker left.
set -euo pipefail
service="$1"

coproc SERVICE { exec "$service" --port 0 --workers 3 --threads 4; }
service_pid=$SERVICE_PID
trap 'kill -KILL $service_pid 2>/dev/null || true' EXIT

# The first line says where it listens (read waits for it; -t bounds the wait).
read -r -t 30 first <&"${SERVICE[0]}"
port="${first##*:}"
port="${port%% *}"
echo "service: $first"

exec 5<>"/dev/tcp/127.0.0.1/$port"
exec 6<>"/dev/tcp/127.0.0.1/$port"
printf 'count_primes 100\ncount_primes 1000000\n' >&5
printf 'segfault x\ncount_primes 10\n' >&6
read -r -t 30 a1 <&5
read -r -t 30 a2 <&5
read -r -t 30 b1 <&6
read -r -t 30 b2 <&6
echo "answers: '$a1' '$a2' '$b1' '$b2'"
[[ "$a1" == "ok 25" ]]
[[ "$a2" == "ok 78498" ]]
[[ "$b1" == error*SIGSEGV* ]]
[[ "$b2" == "ok 4" ]]
exec 5>&- 6>&-

workers=$(pgrep -P "$service_pid" | wc -l)
echo "worker processes before SIGTERM: $workers"
kill -TERM "$service_pid"
wait "$service_pid"
status=$?
trap - EXIT
[[ $status -eq 0 ]]
# Its workers were its children: once it has exited cleanly, none may be left.
! pgrep -f torchpool-primes-worker -P "$service_pid" >/dev/null
echo "stopped cleanly"
