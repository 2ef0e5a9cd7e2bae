#!/usr/bin/env bash
# Quick start: install what is missing, build, and train on the embedded
# synthetic dataset with 2 MPI ranks, printing per-task metrics.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    cat <<USAGE
Usage: launch/run.sh [TRAIN-OPTIONS...]
       NP=4 launch/run.sh [TRAIN-OPTIONS...]

Installs missing system packages (launch/setup.sh), builds ringtrain in
release mode, then runs

    mpirun -np \${NP:-2} target/release/ringtrain train [TRAIN-OPTIONS...]

which trains on the embedded synthetic dataset unless --data DIR is given,
and prints per-task metrics. TRAIN-OPTIONS are passed to \`ringtrain train\`
unchanged; list them with

    target/release/ringtrain train --help

Environment:
  NP            number of MPI ranks (default 2)
  MPIRUN_ARGS   extra options for mpirun (split on spaces)

Examples:
  launch/run.sh --steps 200 --global-batch 512
  NP=4 launch/run.sh --save model.safetensors --metrics-out metrics.jsonl
USAGE
}

for arg in "$@"; do
    case "$arg" in
    -h | --help)
        usage
        exit 0
        ;;
    esac
done

NP="${NP:-2}"
if ! [[ "$NP" =~ ^[1-9][0-9]*$ ]]; then
    echo "launch/run.sh: NP must be a positive integer, got '$NP'" >&2
    exit 2
fi

# shellcheck source=launch/setup.sh
source "$ROOT/launch/setup.sh"

# Build from anywhere; paths in TRAIN-OPTIONS stay relative to the caller's
# directory.
cargo build --release --manifest-path "$ROOT/Cargo.toml"
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
bin="$target_dir/release/ringtrain"
[ -x "$bin" ] || {
    echo "launch/run.sh: $bin was not built" >&2
    exit 1
}

mpi_opts=(-np "$NP")
if [ "$(id -u)" -eq 0 ]; then
    mpi_opts+=(--allow-run-as-root)
fi
if [ "$(nproc)" -lt "$NP" ]; then
    # More ranks than cores: let OpenMPI start them, and make waiting ranks
    # yield instead of spinning against each other.
    mpi_opts+=(--oversubscribe --mca mpi_yield_when_idle 1)
fi
extra=()
if [ -n "${MPIRUN_ARGS:-}" ]; then
    read -r -a extra <<<"$MPIRUN_ARGS"
fi

exec mpirun "${mpi_opts[@]}" "${extra[@]}" "$bin" train "$@"
