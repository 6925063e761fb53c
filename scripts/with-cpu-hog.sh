#!/usr/bin/env bash
# Runs a command on a machine whose cores are busy with other work: three busy processes per
# core at normal priority (TORCHPOOL_HOG_PER_CORE to change), started before the command and
# stopped after it. The command's exit status is this script's.
#
#   scripts/with-cpu-hog.sh COMMAND [ARGS...]
set -euo pipefail
if [ $# -eq 0 ]; then
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
per_core="${TORCHPOOL_HOG_PER_CORE:-3}"
hogs=()
stop_hogs() {
    if [ ${#hogs[@]} -gt 0 ]; then
        kill "${hogs[@]}" 2>/dev/null || true
        wait "${hogs[@]}" 2>/dev/null || true
    fi
}
trap stop_hogs EXIT
for _ in $(seq $(( $(nproc) * per_core ))); do
    # A busy loop in a shell of its own: no I/O, no sleep, all the CPU the scheduler gives it.
    bash -c 'while :; do :; done' &
    hogs+=($!)
done
echo "with-cpu-hog: ${#hogs[@]} busy processes on $(nproc) cores; running: $*" >&2
status=0
"$@" || status=$?
exit $status
