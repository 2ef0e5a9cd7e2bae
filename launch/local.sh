#!/usr/bin/env bash
# Starts N ranks of a program on this machine without MPI, like
# `torchrun --standalone`: each rank gets its place in the environment,
# its output lines prefixed with "[rank R] ", and if one rank fails the
# others are stopped.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: launch/local.sh N [--] PROGRAM [ARGS...]

Starts N copies of PROGRAM on this machine (no MPI), each with

    RANK=r  WORLD_SIZE=N  LOCAL_RANK=r  LOCAL_WORLD_SIZE=N
    RINGTRAIN_RUN_ID      a fresh id for this launch
    RINGTRAIN_RENDEZVOUS  a fresh empty directory (the default of
                          ringtrain's --rendezvous), removed at the end

and prefixes every line a rank writes with "[rank r] " (stdout stays
stdout, stderr stays stderr). When a rank exits with a non-zero status
the others get 2 s to end on their own (an error all ranks agreed on
ends them together, and the rank that explains it may not be the first
to exit), then are stopped (SIGTERM, then SIGKILL after 5 s), and
local.sh exits with that status; it exits 0 when every rank succeeds.

ringtrain reads these variables with --bootstrap env (or auto, which
picks env when RANK/WORLD_SIZE say more than one rank and no MPI
launcher started the process).

Examples:
  launch/local.sh 2 -- target/release/ringtrain --bootstrap env info
  launch/local.sh 1 -- target/release/ringtrain --bootstrap env train --steps 100

Environment:
  LOCAL_SH_SETTLE  seconds the other ranks get to end on their own after
                   one failed, before SIGTERM (default 2)
  LOCAL_SH_GRACE   seconds between SIGTERM and SIGKILL (default 5)
USAGE
}

die() {
    echo "local.sh: $*" >&2
    exit 2
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
"")
    usage >&2
    exit 2
    ;;
esac

n="$1"
shift
[[ "$n" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$n' (see --help)"
[ "${1:-}" != "--" ] || shift
[ "$#" -ge 1 ] || die "no program to run (see --help)"
command -v setsid >/dev/null 2>&1 || die "setsid (util-linux) is needed"
grace="${LOCAL_SH_GRACE:-5}"
[[ "$grace" =~ ^[0-9]+$ ]] || die "LOCAL_SH_GRACE must be a whole number of seconds"
settle="${LOCAL_SH_SETTLE:-2}"
[[ "$settle" =~ ^[0-9]+$ ]] || die "LOCAL_SH_SETTLE must be a whole number of seconds"

work="$(mktemp -d "${TMPDIR:-/tmp}/ringtrain-local.XXXXXX")"
rendezvous="$work/rendezvous"
mkdir "$rendezvous"
run_id="local-$(hostname 2>/dev/null || echo host)-$$-$(date +%s%N)-$RANDOM"
# A fresh secret every rank gets: the rendezvous file proves with it that
# it comes from this job (a file planted by anyone else is not taken).
token="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"

pids=()       # rank r's pid (also its process group and session), "" once reaped
prefixers=()  # the output filters

# Copies stdin to stdout with "[rank $1] " before every line.
prefix() {
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        printf '[rank %s] %s\n' "$1" "$line"
    done
}

# Sends signal $1 to every rank still running (its whole process group).
signal_ranks() {
    local pid
    for pid in "${pids[@]}"; do
        [ -n "$pid" ] || continue
        kill "-$1" -- "-$pid" 2>/dev/null || kill "-$1" "$pid" 2>/dev/null || true
    done
}

# Reaps for up to $1 seconds, until no rank is left running.
reap_for() {
    local t
    for ((t = 0; t < $1 * 10; t++)); do
        reap
        any_running || return 0
        sleep 0.1
    done
}

# True while some rank has not been reaped.
any_running() {
    local pid
    for pid in "${pids[@]}"; do
        [ -z "$pid" ] || return 0
    done
    return 1
}

# Reaps the ranks that have ended; sets failed_rank/failed_code for the
# first non-zero status seen.
reap() {
    local r pid code
    for r in "${!pids[@]}"; do
        pid="${pids[$r]}"
        [ -n "$pid" ] || continue
        kill -0 "$pid" 2>/dev/null && continue
        code=0
        wait "$pid" || code=$?
        pids[r]=""
        if [ "$code" -ne 0 ] && [ -z "$failed_rank" ]; then
            failed_rank="$r"
            failed_code="$code"
        fi
    done
}

# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
    signal_ranks KILL
    rm -rf "$work"
}
trap cleanup EXIT
# shellcheck disable=SC2317 # called from the INT and TERM traps
on_signal() {
    trap - INT TERM
    echo "local.sh: $1: stopping all ranks" >&2
    signal_ranks TERM
    exit "$2"
}
trap 'on_signal interrupted 130' INT
trap 'on_signal terminated 143' TERM

for ((r = 0; r < n; r++)); do
    mkfifo "$work/out.$r" "$work/err.$r"
    prefix "$r" <"$work/out.$r" &
    prefixers+=("$!")
    prefix "$r" <"$work/err.$r" >&2 &
    prefixers+=("$!")
    (
        # Not started by MPI: hide an outer MPI launcher's variables.
        unset OMPI_COMM_WORLD_RANK OMPI_COMM_WORLD_SIZE OMPI_COMM_WORLD_LOCAL_RANK \
            OMPI_COMM_WORLD_LOCAL_SIZE PMIX_RANK PMI_RANK PMI_SIZE
        export RANK="$r" WORLD_SIZE="$n" LOCAL_RANK="$r" LOCAL_WORLD_SIZE="$n" \
            RINGTRAIN_RUN_ID="$run_id" RINGTRAIN_RENDEZVOUS="$rendezvous" \
            RINGTRAIN_RDZV_TOKEN="$token"
        # Its own session and process group, so that stopping a rank also
        # stops what it started.
        exec setsid --wait "$@"
    ) >"$work/out.$r" 2>"$work/err.$r" </dev/null &
    pids+=("$!")
done

failed_rank=""
failed_code=0
while any_running; do
    reap
    if [ -n "$failed_rank" ]; then
        # The others may be ending too, one of them still printing why.
        reap_for "$settle"
        if any_running; then
            echo "local.sh: rank $failed_rank exited with status $failed_code; stopping the other ranks" >&2
        else
            echo "local.sh: rank $failed_rank exited with status $failed_code" >&2
        fi
        signal_ranks TERM
        reap_for "$grace"
        signal_ranks KILL
        while any_running; do
            reap
            sleep 0.05
        done
        break
    fi
    sleep 0.1
done

# The filters end when the last writer of their pipe is gone; give a rank's
# stray children (outside its process group) a moment, then drop them.
for ((t = 0; t < 50; t++)); do
    alive=0
    for pid in "${prefixers[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            alive=1
        fi
    done
    [ "$alive" -eq 1 ] || break
    sleep 0.1
done
for pid in "${prefixers[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done

exit "$failed_code"
