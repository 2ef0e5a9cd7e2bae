#!/usr/bin/env bash
# Installs what is missing (launch/setup.sh), then runs the whole test suite
# in release mode (all test binaries, even after a failure), first with MPI,
# then in the build without MPI. Extra arguments go to `cargo test`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    cat <<USAGE
Usage: launch/test.sh [CARGO-TEST-ARGS...]

Installs missing system packages (launch/setup.sh), then runs, in the
repository root,

    cargo test --release --no-fail-fast [CARGO-TEST-ARGS...]
    cargo test --release --no-fail-fast -p kernel-emu   (only without arguments)
    cargo test --release --no-fail-fast --no-default-features [CARGO-TEST-ARGS...]

the first with MPI (unit tests, and integration tests that run the real
binary under \`mpirun -np N\`), the second in a build without MPI (unit
tests and tests/bootstrap.rs; the tests that need mpirun are compiled out
there). Both run even when the first fails. Without arguments, the tests
of the kernel emulator (crates/kernel-emu) run in between. Then it
rebuilds the default binary (target/release/ringtrain with MPI; no
recompilation). Exits 0 when all passed, else the status of the first that
failed.

Tests that need a GPU are #[ignore]d and run (--include-ignored) only when
\`nvidia-smi -L\` works; tests/nvrtc.rs compiles every kernel with the
NVRTC PyPI wheel (installed into target/py); tests/cluster.rs runs on
simulated hosts (launch/sim-cluster.sh) and needs root (network
namespaces). The closing line counts the
tests not run: "tests: N passed, N failed, N skipped (need a GPU, NVRTC or network namespaces)".

Environment:
  RINGTRAIN_TEST_NO_MPI=0   skip the second run (the build without MPI)

Examples:
  launch/test.sh                      # everything
  launch/test.sh --test bad_input     # one integration test file
  launch/test.sh -- --nocapture       # show test output
USAGE
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
esac

# shellcheck source=launch/setup.sh
source "$ROOT/launch/setup.sh"

cd "$ROOT"

# NumPy + safetensors for the test that rebuilds a saved model outside
# ringtrain (tests/python/forward_from_file.py); in a venv under target/.
py="$ROOT/target/py/bin/python"
if ! "$py" -c "import numpy, safetensors" >/dev/null 2>&1; then
    if python3 -m venv "$ROOT/target/py" >/dev/null 2>&1 &&
        "$py" -m pip install -q numpy safetensors >/dev/null 2>&1; then
        echo "test.sh: installed numpy and safetensors in target/py" >&2
    else
        echo "test.sh: warning: could not set up numpy/safetensors; the NumPy rebuild test will report itself skipped" >&2
    fi
fi
export RINGTRAIN_PYTHON="$py"

# NVRTC (CUDA 13) for tests/nvrtc.rs, which compiles every kernel with no
# GPU: PyPI wheels into the same venv, the library dir on LD_LIBRARY_PATH.
cu13="$("$py" -c 'import sys; print(sys.prefix)' 2>/dev/null)/lib/python$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)/site-packages/nvidia/cu13"
if [ ! -e "$cu13/lib/libnvrtc.so.13" ]; then
    if "$py" -m pip install -q "nvidia-cuda-nvrtc==13.0.*" "nvidia-cuda-runtime==13.0.*" >/dev/null 2>&1; then
        echo "test.sh: installed nvidia-cuda-nvrtc and nvidia-cuda-runtime (CUDA 13.0) in target/py" >&2
    else
        echo "test.sh: warning: could not install the NVRTC wheels; tests/nvrtc.rs will report itself skipped" >&2
    fi
fi
if [ -e "$cu13/lib/libnvrtc.so.13" ]; then
    export RINGTRAIN_NVRTC_LIB="$cu13/lib" RINGTRAIN_CUDA_INCLUDE="$cu13/include"
    export LD_LIBRARY_PATH="$cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# Tests that need a GPU are #[ignore]d; run them where one is present.
gpu_args=()
if nvidia-smi -L >/dev/null 2>&1; then
    echo "test.sh: a GPU is present: running the tests that need one (--include-ignored)" >&2
    gpu_args=(--include-ignored)
    sep=--
    for a in "$@"; do [ "$a" != -- ] || sep=; done
    [ -z "$sep" ] || gpu_args=(-- --include-ignored)
fi

status=0
# Every summary line also goes to a log, for one total at the end.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run_tests() { # cargo test ARGS...; the output passes through, summaries are kept
    set -o pipefail
    cargo test "$@" 2>&1 | tee -a "$log"
}
echo "test.sh: cargo test --release --no-fail-fast $*" >&2
run_tests --release --no-fail-fast "$@" "${gpu_args[@]}" || status=$?
if [ $# -eq 0 ]; then
    # The kernel emulator's own tests (a workspace member, not run above).
    echo "test.sh: cargo test --release --no-fail-fast -p kernel-emu" >&2
    emu=0
    run_tests --release --no-fail-fast -p kernel-emu || emu=$?
    [ "$status" -ne 0 ] || status="$emu"
fi
if [ "${RINGTRAIN_TEST_NO_MPI:-1}" != 0 ]; then
    # Same target dir: only the ringtrain crate itself is rebuilt.
    echo "test.sh: cargo test --release --no-fail-fast --no-default-features $* (the build without MPI)" >&2
    no_mpi=0
    run_tests --release --no-fail-fast --no-default-features "$@" "${gpu_args[@]}" || no_mpi=$?
    [ "$status" -ne 0 ] || status="$no_mpi"
    # Leave target/release/ringtrain the default (MPI) build again.
    cargo build --release --quiet || { [ "$status" -ne 0 ] || status=1; }
fi
# One closing line over both builds: "tests: N passed, N failed, N skipped
# (need a GPU, NVRTC or network namespaces)"; skipped = ignored (GPU tests
# without a GPU, the NVRTC check without libnvrtc, tests/cluster.rs where
# network namespaces are refused).
awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped (need a GPU, NVRTC or network namespaces)\n", p, f, s }' "$log"
exit "$status"
