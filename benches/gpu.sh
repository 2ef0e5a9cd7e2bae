#!/usr/bin/env bash
# GPU checks and benchmarks on the lent GPU machine (no Rust toolchain):
# runs what benches/gpu-build.sh built here and carried in target/gpu-carry.
#   1. prints nvidia-smi, mpirun, `ringtrain info`, and where NVRTC, cuBLAS,
#      the CUDA headers and NCCL are (/usr/local/cuda or the PyTorch venv's
#      site-packages/nvidia/*);
#      puts a libnccl.so -> libnccl.so.2 symlink on LD_LIBRARY_PATH;
#   2. runs the GPU test executables with --include-ignored;
#   3. bench allreduce --comm nccl at 1 rank, and at 2 ranks on one GPU
#      (launch/local.sh, NCCL_MULTI_RANK_GPU_ENABLE=1, NCCL >= 2.30 needed);
#   4. the kernel bandwidth report (each kernel against a memcpy, same run);
#      bench train --device cuda at hidden 256,256 (default), 64,64 and
#      2048,2048 (1 rank; 2 ranks over NCCL when possible), each beside
#      benches/torch_ref.py (PyTorch, same model/batch/optimizer, eager
#      and torch.compile);
#   5. a short table of the figures with ratios, last.
# Every stage runs under a timeout cut from one budget, so a hung stage
# costs its own share and the summary still prints. Logs and JSON are
# written to a work directory and packed after every stage into
# OUT_DIR/gpu-logs.tar.gz (the device tool returns at most 8 files);
# the table also goes to OUT_DIR/summary.txt.
# Usage: benches/gpu.sh [--quick]    (OUT_DIR defaults to $OUT, else a
#   temp dir). Environment: PYTHON (a python with torch), CARRY (default
#   target/gpu-carry), GPU_SH_BUDGET (seconds for all stages, default 360),
#   GPU_SH_STAGES (default "tests allreduce kernels train torch": a second
#   call re-runs only the stages named; the machine stage always runs),
#   GPU_SH_TESTS (a test-name filter for the tests stage, e.g. "two_").
#   Exit status: 1 if a test failed or a stage timed out, else 0.
set -uo pipefail

case "${1:-}" in
-h | --help)
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
--quick | "") ;;
*)
    echo "gpu.sh: unknown argument '$1' (see --help)" >&2
    exit 2
    ;;
esac
quick=0
[ "${1:-}" = "--quick" ] && quick=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="${CARRY:-$ROOT/target/gpu-carry}"
OUT_DIR="${OUT_DIR:-${OUT:-$(mktemp -d)}}"
mkdir -p "$OUT_DIR"
logs="$(mktemp -d /tmp/gpu-sh.XXXXXX)"
budget="${GPU_SH_BUDGET:-360}"
[[ "$budget" =~ ^[1-9][0-9]*$ ]] || {
    echo "gpu.sh: GPU_SH_BUDGET must be a positive number of seconds, got '$budget'" >&2
    exit 2
}
deadline=$((SECONDS + budget))
stages=" ${GPU_SH_STAGES:-tests allreduce kernels train torch} "
for st in $stages; do
    case "$st" in
    tests | allreduce | kernels | train | torch) ;;
    *)
        echo "gpu.sh: GPU_SH_STAGES: unknown stage '$st' (tests allreduce kernels train torch)" >&2
        exit 2
        ;;
    esac
done
wanted() { [[ "$stages" == *" $1 "* ]]; }
bin="$CARRY/ringtrain"
[ -x "$bin" ] || {
    echo "gpu.sh: $bin not found: run benches/gpu-build.sh where cargo is, and carry target/gpu-carry" >&2
    exit 2
}
say() { printf '\n=== %s\n' "$*"; }
# The logs so far, packed where the device tool returns them (a temp name
# first, so a call cut short leaves the previous whole archive).
pack() {
    tar -czf "$OUT_DIR/.gpu-logs.tar.gz" -C "$logs" . 2>/dev/null &&
        mv -f "$OUT_DIR/.gpu-logs.tar.gz" "$OUT_DIR/gpu-logs.tar.gz"
}
# within CAP CMD...: runs CMD under a timeout of CAP seconds or what is
# left of the budget (less 20 s kept for the summary), whichever is less;
# skips it when under 10 s would be left. 124 means it ran out of time.
# A flag file, not a variable: `within ... | tee` runs in a subshell.
timed_out="$logs/timed-out"
within() {
    local cap="$1" left rc
    shift
    left=$((deadline - SECONDS - 20))
    [ "$left" -lt "$cap" ] && cap="$left"
    if [ "$cap" -lt 10 ]; then
        echo "gpu.sh: out of time budget: skipped: $*" | tee -a "$timed_out" >&2
        return 124
    fi
    timeout -k 10 "$cap" "$@"
    rc=$?
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        echo "gpu.sh: TIMED OUT after $cap s: $*" | tee -a "$timed_out" >&2
    fi
    return "$rc"
}

say "machine"
nvidia-smi || echo "gpu.sh: nvidia-smi failed"
echo "mpirun: $(command -v mpirun || echo none)"
cat "$CARRY/MANIFEST" 2>/dev/null
echo "this machine's glibc: $(ldd --version 2>/dev/null | head -n 1)"

# A python that has torch: $PYTHON, python3 on PATH, or a venv in the
# usual places.
find_python() {
    local p
    for p in "${PYTHON:-}" "$(command -v python3 || true)" /opt/*/bin/python3 \
        /opt/*/.venv/bin/python3 /root/*/bin/python3 /venv/bin/python3 /workspace/*/bin/python3; do
        [ -n "$p" ] && [ -x "$p" ] && "$p" -c 'import torch' 2>/dev/null && {
            echo "$p"
            return 0
        }
    done
    return 1
}
py="$(find_python || true)"
echo "python with torch: ${py:-none}"
site=""
[ -n "$py" ] && site="$("$py" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)"

# Libraries and headers: the machine's CUDA first, then the wheels.
roots=(/usr/local/cuda /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu)
for s in $site; do roots+=("$s/nvidia"); done
find_one() { # NAME-GLOB: the first match under the roots
    local r f
    for r in "${roots[@]}"; do
        [ -d "$r" ] || continue
        f="$(find -L "$r" -maxdepth 5 -name "$1" 2>/dev/null | sort | head -n 1)"
        [ -n "$f" ] && {
            echo "$f"
            return 0
        }
    done
    return 1
}
# CUDA 13's: the binary is built against cudarc's cuda-13000 (a machine
# may also carry CUDA 12 libraries).
nccl_lib="$(find_one 'libnccl.so.2*' || true)"
nvrtc_lib="$(find_one 'libnvrtc.so.13*' || true)"
cublas_lib="$(find_one 'libcublas.so.13*' || true)"
fp16_h="$(find_one 'cuda_fp16.h' || true)"
echo "libnccl:   ${nccl_lib:-not found}"
echo "libnvrtc:  ${nvrtc_lib:-not found}"
echo "libcublas: ${cublas_lib:-not found}"
echo "headers:   ${fp16_h:-cuda_fp16.h not found}"

# cudarc dlopens libnccl.so (the wheel has only libnccl.so.2) and
# libnvrtc.so: symlinks in a directory of our own, first on the path.
links="$(mktemp -d)"
trap 'rm -rf "$links"' EXIT
[ -n "$nccl_lib" ] && ln -s "$nccl_lib" "$links/libnccl.so"
[ -n "$nvrtc_lib" ] && ln -s "$nvrtc_lib" "$links/libnvrtc.so"
libpath="$links"
# cuBLAS by its directory (cudarc tries libcublas.so.13; libcublasLt is
# beside it).
for f in "$nccl_lib" "$nvrtc_lib" "$cublas_lib"; do [ -n "$f" ] && libpath+=":$(dirname "$f")"; done
export LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Found: tests/nvrtc.rs then fails, rather than skips, if it cannot load it.
[ -n "$nvrtc_lib" ] && export RINGTRAIN_NVRTC_LIB="${nvrtc_lib%/*}"
if [ -n "$fp16_h" ]; then
    RINGTRAIN_CUDA_INCLUDE="$(dirname "$fp16_h")"
    export RINGTRAIN_CUDA_INCLUDE
fi
[ -d /usr/local/cuda ] && export CUDA_HOME=/usr/local/cuda
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

# What the binary itself finds (GPU probe, and ncclGetVersion of the NCCL
# it loads); then the NCCL version from that, else the library's file name
# (libnccl.so.2.27.3), else torch.
within 60 "$bin" --bootstrap env info 2>&1 | tee "$logs/info.txt"
nccl_version="$(sed -n 's/^nccl: NCCL \([0-9][0-9.]*\) .*/\1/p' "$logs/info.txt" | head -n 1)"
[ -n "$nccl_version" ] ||
    nccl_version="$(readlink -f "${nccl_lib:-/nonexistent}" 2>/dev/null | sed -n 's/.*libnccl\.so\.\([0-9.]*\)$/\1/p')"
if [ -z "$nccl_version" ] && [ -n "$py" ]; then
    nccl_version="$("$py" -c 'import torch; print(".".join(map(str, torch.cuda.nccl.version())))' 2>/dev/null)"
fi
echo "NCCL version: ${nccl_version:-unknown}"
gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
# Two ranks on one GPU need NCCL >= 2.30 and NCCL_MULTI_RANK_GPU_ENABLE=1.
two_ranks=1
if [ "${gpus:-0}" -lt 2 ]; then
    major="${nccl_version%%.*}"
    minor="$(echo "$nccl_version" | cut -d. -f2)"
    if [ -z "$nccl_version" ] || [ "${major:-0}" -lt 2 ] ||
        { [ "$major" -eq 2 ] && [ "${minor:-0}" -lt 30 ]; }; then
        two_ranks=0
        echo "gpu.sh: 2 ranks need 2 GPUs or NCCL >= 2.30 (found ${nccl_version:-unknown}): the 2-rank runs are skipped"
    fi
fi
export NCCL_MULTI_RANK_GPU_ENABLE=1
# One call must explain its own failures: NCCL's reasons in the logs.
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
# Compiled kernels shared by every process of the call (one NVRTC pass).
RINGTRAIN_PTX_CACHE="${RINGTRAIN_PTX_CACHE:-$(mktemp -d /tmp/gpu-sh-ptx.XXXXXX)}"
export RINGTRAIN_PTX_CACHE
pack

export RINGTRAIN_BIN="$bin" RINGTRAIN_ROOT="$ROOT"
failed=0

stage_tests() {
    say "tests (--include-ignored)"
    local t filter=() skip
    [ -n "${GPU_SH_TESTS:-}" ] && filter=("$GPU_SH_TESTS")
    for t in "$CARRY"/tests/*; do
        [ -x "$t" ] || continue
        # The bandwidth report has a stage of its own.
        skip=(--skip kernel_bandwidth_report)
        [ "$two_ranks" = 0 ] && skip+=(--skip two_)
        echo "--- $(basename "$t")"
        # tests/gpu: a kernel's fault reported at its own launch, not at
        # the next download (not for NCCL: a blocking launch of a
        # collective could wait on itself).
        blocking=()
        [ "$(basename "$t")" = gpu ] && blocking=(env CUDA_LAUNCH_BLOCKING=1)
        within 150 "${blocking[@]}" "$t" --include-ignored --test-threads 1 "${skip[@]}" \
            "${filter[@]}" 2>&1 | tee "$logs/test-$(basename "$t").log" || failed=1
        pack
    done
}

stage_allreduce() {
    say "bench allreduce --comm nccl"
    local sizes=(-b 8 -e 256M -f 4)
    [ $quick = 1 ] && sizes=(-b 8 -e 16M -f 16)
    local ar=(bench allreduce --comm nccl "${sizes[@]}" -n 20 -w 5)
    # The table on the screen, the same run's JSON by -J.
    within 120 "$bin" --bootstrap env "${ar[@]}" -J "$logs/allreduce-1.json" 2>&1 |
        tee "$logs/allreduce-1.txt"
    if [ "$two_ranks" = 1 ]; then
        within 120 bash "$ROOT/launch/local.sh" 2 -- "$bin" --bootstrap env "${ar[@]}" \
            -J "$logs/allreduce-2.json" 2>&1 | tee "$logs/allreduce-2.txt"
    fi
    pack
}

stage_kernels() {
    say "kernel bandwidth (tests/gpu.rs kernel_bandwidth_report, memcpy in the same run)"
    [ -x "$CARRY/tests/gpu" ] || return 0
    within 180 "$CARRY/tests/gpu" --include-ignored --exact kernel_bandwidth_report --nocapture 2>&1 |
        tee "$logs/kernels.txt" || failed=1
    pack
}

# bench train --device cuda at one model size (1 rank; at the default
# size 2 ranks over NCCL too when possible).
stage_train() { # HIDDEN TAG
    say "bench train --device cuda --hidden $1"
    local train=(bench train --device cuda --hidden "$1" --iters "$iters" --warmup 20 --json)
    # JSON only (the summary reads it; one run, not two); errors to a log.
    within 120 "$bin" --bootstrap env "${train[@]}" 2> >(tee "$logs/train-1-$2.err" >&2) |
        tee "$logs/train-1-$2.json"
    if [ "$two_ranks" = 1 ] && [ "$1" = 256,256 ]; then
        within 120 bash "$ROOT/launch/local.sh" 2 -- "$bin" --bootstrap env "${train[@]}" \
            --comm nccl 2> >(tee "$logs/train-2.err" >&2) | sed 's/^\[rank 0\] //' |
            tee "$logs/train-2.json"
    fi
    pack
}

# benches/torch_ref.py at the same size: PyTorch eager and torch.compile.
stage_torch() { # HIDDEN TAG
    say "PyTorch reference (benches/torch_ref.py --hidden $1)"
    if [ -z "$py" ]; then
        echo "gpu.sh: no python with torch: PyTorch reference skipped"
        return 0
    fi
    within 240 env PYTHONUNBUFFERED=1 "$py" "$ROOT/benches/torch_ref.py" --hidden "$1" \
        --iters "$iters" --warmup 20 --json 2>&1 | tee "$logs/torch-$2.json"
    pack
}

wanted tests && stage_tests
wanted allreduce && stage_allreduce
wanted kernels && stage_kernels
# The default model (hidden 256,256), a small and a large one; ringtrain
# and PyTorch side by side for each.
iters=200
[ $quick = 1 ] && iters=30
sizes_hidden=("256,256" "64,64" "2048,2048")
[ $quick = 1 ] && sizes_hidden=("256,256")
for hidden in "${sizes_hidden[@]}"; do
    wanted train && stage_train "$hidden" "${hidden//,/x}"
    wanted torch && stage_torch "$hidden" "${hidden//,/x}"
done

say "summary"
python_any="${py:-$(command -v python3 || true)}"
if [ -n "$python_any" ]; then
    "$python_any" - "$logs" <<'PY' | tee "$logs/summary.txt"
import json, os, sys
d = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(d, name)) as f:
            return [json.loads(l) for l in f if l.strip().startswith("{")]
    except OSError:
        return []
def largest(objs):
    if not objs or not objs[0].get("rows"):
        return None
    return objs[0]["rows"][-1], objs[0].get("wrong")
rows = []
for n in (1, 2):
    b = largest(load(f"allreduce-{n}.json"))
    if b:
        r, wrong = b
        # busbw = algbw * 2(n-1)/n is 0 at one rank: out-of-place algbw
        # there (a copy on the GPU, comparable with the memcpy row).
        col = "busbw" if n > 1 else "algbw"
        rows.append((f"allreduce nccl {n} rank(s), {r['size']} B: {col} oop/ip GB/s",
                     f"{r['out_of_place'][col]:.1f} / {r['in_place'][col]:.1f}", f"#wrong {wrong}"))
t2 = load("train-2.json")
for tag in ("256x256", "64x64", "2048x2048"):
    t = load(f"train-1-{tag}.json")
    ours = t[0]["samples_per_s"] if t else None
    if ours:
        rows.append((f"ringtrain bench train --device cuda, hidden {tag}, samples/s", f"{ours:.0f}", ""))
    if tag == "256x256" and t2 and ours:
        s2 = t2[0]["samples_per_s"]
        rows.append(("ringtrain bench train, 2 ranks over NCCL on one GPU, samples/s", f"{s2:.0f}", f"2 ranks/1 rank = {s2 / ours:.2f}"))
    for r in load(f"torch-{tag}.json"):
        ratio = f"ringtrain/torch = {ours / r['samples_per_s']:.2f}" if ours else ""
        rows.append((f"torch {r['mode']}, hidden {tag}, samples/s", f"{r['samples_per_s']:.0f}", ratio))
w = max((len(r[0]) for r in rows), default=10)
for a, b, c in rows:
    print(f"{a:<{w}}  {b:>14}  {c}")
if not rows:
    print("no figures (see the logs above)")
PY
fi
[ -f "$logs/summary.txt" ] && cp "$logs/summary.txt" "$OUT_DIR/summary.txt"
pack
echo "logs and JSON in $logs, packed in $OUT_DIR/gpu-logs.tar.gz"
[ "$failed" = 0 ] || echo "gpu.sh: a test FAILED (see above)"
[ -e "$timed_out" ] && echo "gpu.sh: a stage TIMED OUT or was skipped for time (see above)"
[ "$failed" = 0 ] && [ ! -e "$timed_out" ]
