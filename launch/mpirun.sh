#!/usr/bin/env bash
# ringtrain on one node under mpirun, with rank binding chosen for the
# cores this machine has and the GEMM threads each rank uses.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    cat <<'USAGE'
Usage: launch/mpirun.sh [-np N] [--dry-run] [--] [RINGTRAIN-ARGS...]

Runs `mpirun -np N ringtrain RINGTRAIN-ARGS...` on this node (no build:
run `cargo build --release` first, or set RINGTRAIN_BIN). RINGTRAIN-ARGS
default to `train`; e.g. `train --data mydata --steps 2000 --threads 2`,
`info`, `bench allreduce -b 1M -e 64M`.

  -np N       ranks (default: cores / threads per rank, at least 1)
  --dry-run   print the mpirun command instead of running it
  -h, --help  this text

Binding, from N, the cores (physical, from nproc and lscpu) and the
threads per rank T (the `--threads T` in RINGTRAIN-ARGS, default 1):
  N*T <= cores   --bind-to core --map-by slot:PE=T (T cores per rank,
                 ranks never migrate); --map-by core when T = 1
  N*T >  cores   --oversubscribe --bind-to none, and waiting ranks yield
                 (--mca mpi_yield_when_idle 1) instead of spinning
As root, OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM)=1 are exported so that
OpenMPI starts.

Environment:
  RINGTRAIN_BIN   the binary (default: target/release/ringtrain in the repository)
  MPIRUN_ARGS     extra mpirun options (split on spaces), e.g.
                  "--report-bindings" to print where each rank runs, or
                  "--mca btl self,vader" (shared memory only, OpenMPI 4)
  NP              the default of -np

Examples:
  launch/mpirun.sh -np 2 train --steps 200
  launch/mpirun.sh -np 4 -- train --data mydata --threads 1 --save model.safetensors
  MPIRUN_ARGS=--report-bindings launch/mpirun.sh --dry-run -np 2
USAGE
}

die() {
    echo "mpirun.sh: $*" >&2
    exit 2
}

np="${NP:-}"
dry=0
while [ "$#" -gt 0 ]; do
    case "$1" in
    -h | --help)
        usage
        exit 0
        ;;
    -np | -n | --np)
        [ "$#" -ge 2 ] || die "$1 needs a value (see --help)"
        np="$2"
        shift 2
        ;;
    --dry-run)
        dry=1
        shift
        ;;
    --)
        shift
        break
        ;;
    *) break ;;
    esac
done
[ "$#" -gt 0 ] || set -- train

# Threads per rank: the value of --threads in the ringtrain arguments.
threads=1
prev=""
for arg in "$@"; do
    case "$arg" in
    --threads=*) threads="${arg#--threads=}" ;;
    esac
    [ "$prev" != "--threads" ] || threads="$arg"
    prev="$arg"
done
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || die "--threads must be a positive integer, got '$threads'"

# Physical cores this process may use: nproc counts hardware threads.
cpus="$(nproc)"
per_core="$(lscpu 2>/dev/null | sed -n 's/^Thread(s) per core: *\([0-9]*\).*/\1/p')"
[[ "${per_core:-}" =~ ^[1-9][0-9]*$ ]] || per_core=1
cores=$((cpus / per_core))
[ "$cores" -ge 1 ] || cores=1

if [ -z "$np" ]; then
    np=$((cores / threads))
    [ "$np" -ge 1 ] || np=1
fi
[[ "$np" =~ ^[1-9][0-9]*$ ]] || die "-np must be a positive integer, got '$np'"

BIN="${RINGTRAIN_BIN:-$ROOT/target/release/ringtrain}"
[ "$dry" -eq 1 ] || [ -x "$BIN" ] ||
    die "$BIN is not an executable (build with cargo build --release, or set RINGTRAIN_BIN)"
command -v mpirun >/dev/null 2>&1 || [ "$dry" -eq 1 ] ||
    die "mpirun not found (launch/setup.sh installs OpenMPI)"

opts=(-np "$np")
if [ $((np * threads)) -le "$cores" ]; then
    if [ "$threads" -eq 1 ]; then
        opts+=(--bind-to core --map-by core)
    else
        opts+=(--bind-to core --map-by "slot:PE=$threads")
    fi
else
    opts+=(--oversubscribe --bind-to none --mca mpi_yield_when_idle 1)
fi
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
extra=()
if [ -n "${MPIRUN_ARGS:-}" ]; then
    read -r -a extra <<<"$MPIRUN_ARGS"
fi

cmd=(mpirun "${opts[@]}" "${extra[@]}" "$BIN" "$@")
echo "mpirun.sh: $np rank(s) x $threads thread(s) on $cores core(s): ${cmd[*]}" >&2
[ "$dry" -eq 0 ] || exit 0
exec "${cmd[@]}"
