#!/usr/bin/env bash
# GPU checks and benchmarks on the lent GPU machine (no Rust toolchain):
# runs what benches/gpu-build.sh built here and carried in target/gpu-carry.
#   1. prints nvidia-smi, mpirun, and where NVRTC, the CUDA headers and NCCL
#      are (/usr/local/cuda or the PyTorch venv's site-packages/nvidia/*);
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
# Usage: benches/gpu.sh [--quick]    (JSON and logs in $OUT_DIR, else $OUT,
#   else a temp dir). Environment: PYTHON (a python with torch), CARRY
#   (default target/gpu-carry). Exit status: 1 if a test failed, else 0.
set -uo pipefail

case "${1:-}" in
-h | --help)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
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
bin="$CARRY/ringtrain"
[ -x "$bin" ] || {
    echo "gpu.sh: $bin not found: run benches/gpu-build.sh where cargo is, and carry target/gpu-carry" >&2
    exit 2
}
say() { printf '\n=== %s\n' "$*"; }

say "machine"
nvidia-smi || echo "gpu.sh: nvidia-smi failed"
echo "mpirun: $(command -v mpirun || echo none)"
cat "$CARRY/MANIFEST" 2>/dev/null

# A python that has torch: $PYTHON, python3 on PATH, or a venv in the
# usual places.
find_python() {
    local p
    for p in "${PYTHON:-}" "$(command -v python3 || true)" /opt/*/bin/python3 \
        /root/*/bin/python3 /venv/bin/python3 /workspace/*/bin/python3; do
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
nccl_lib="$(find_one 'libnccl.so.2*' || true)"
nvrtc_lib="$(find_one 'libnvrtc.so.*' || true)"
fp16_h="$(find_one 'cuda_fp16.h' || true)"
echo "libnccl:   ${nccl_lib:-not found}"
echo "libnvrtc:  ${nvrtc_lib:-not found}"
echo "headers:   ${fp16_h:-cuda_fp16.h not found}"

# cudarc dlopens libnccl.so (the wheel has only libnccl.so.2) and
# libnvrtc.so: symlinks in a directory of our own, first on the path.
links="$(mktemp -d)"
trap 'rm -rf "$links"' EXIT
[ -n "$nccl_lib" ] && ln -s "$nccl_lib" "$links/libnccl.so"
[ -n "$nvrtc_lib" ] && ln -s "$nvrtc_lib" "$links/libnvrtc.so"
libpath="$links"
for f in "$nccl_lib" "$nvrtc_lib"; do [ -n "$f" ] && libpath+=":$(dirname "$f")"; done
export LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -n "$fp16_h" ]; then
    RINGTRAIN_CUDA_INCLUDE="$(dirname "$fp16_h")"
    export RINGTRAIN_CUDA_INCLUDE
fi
[ -d /usr/local/cuda ] && export CUDA_HOME=/usr/local/cuda
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

# NCCL version from the library's file name (libnccl.so.2.27.3), else torch.
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

say "tests (--include-ignored)"
export RINGTRAIN_BIN="$bin" RINGTRAIN_ROOT="$ROOT"
failed=0
for t in "$CARRY"/tests/*; do
    [ -x "$t" ] || continue
    skip=()
    [ "$two_ranks" = 0 ] && skip=(--skip two_)
    echo "--- $(basename "$t")"
    if ! "$t" --include-ignored --test-threads 1 "${skip[@]}" 2>&1 | tee "$OUT_DIR/test-$(basename "$t").log"; then
        failed=1
    fi
done

say "bench allreduce --comm nccl"
sizes=(-b 8 -e 256M -f 4)
[ $quick = 1 ] && sizes=(-b 8 -e 16M -f 16)
ar_args=(bench allreduce --comm nccl "${sizes[@]}" -n 20 -w 5)
"$bin" --bootstrap env "${ar_args[@]}" | tee "$OUT_DIR/allreduce-1.txt"
"$bin" --bootstrap env "${ar_args[@]}" --json >"$OUT_DIR/allreduce-1.json"
if [ "$two_ranks" = 1 ]; then
    bash "$ROOT/launch/local.sh" 2 -- "$bin" --bootstrap env "${ar_args[@]}" | tee "$OUT_DIR/allreduce-2.txt"
    bash "$ROOT/launch/local.sh" 2 -- "$bin" --bootstrap env "${ar_args[@]}" --json |
        sed 's/^\[rank 0\] //' >"$OUT_DIR/allreduce-2.json"
fi

say "kernel bandwidth (tests/gpu.rs kernel_bandwidth_report, memcpy in the same run)"
if [ -x "$CARRY/tests/gpu" ]; then
    "$CARRY/tests/gpu" --include-ignored --exact kernel_bandwidth_report --nocapture 2>&1 |
        tee "$OUT_DIR/kernels.txt"
fi

# The default model (hidden 256,256), a small and a large one; ringtrain
# and PyTorch side by side for each.
iters=200
[ $quick = 1 ] && iters=30
sizes_hidden=("256,256" "64,64" "2048,2048")
[ $quick = 1 ] && sizes_hidden=("256,256")
for hidden in "${sizes_hidden[@]}"; do
    tag="${hidden//,/x}"
    say "bench train --device cuda --hidden $hidden"
    "$bin" --bootstrap env bench train --device cuda --hidden "$hidden" --iters "$iters" \
        --warmup 20 | tee "$OUT_DIR/train-1-$tag.txt"
    "$bin" --bootstrap env bench train --device cuda --hidden "$hidden" --iters "$iters" \
        --warmup 20 --json >"$OUT_DIR/train-1-$tag.json"
    if [ "$two_ranks" = 1 ] && [ "$hidden" = 256,256 ]; then
        bash "$ROOT/launch/local.sh" 2 -- "$bin" --bootstrap env bench train --device cuda \
            --comm nccl --iters "$iters" --warmup 20 --json |
            sed 's/^\[rank 0\] //' >"$OUT_DIR/train-2.json"
    fi
    say "PyTorch reference (benches/torch_ref.py --hidden $hidden)"
    if [ -n "$py" ]; then
        "$py" "$ROOT/benches/torch_ref.py" --hidden "$hidden" --iters "$iters" --warmup 20 \
            --json | tee "$OUT_DIR/torch-$tag.json"
    else
        echo "gpu.sh: no python with torch: PyTorch reference skipped"
    fi
done

say "summary"
python_any="${py:-$(command -v python3 || true)}"
if [ -n "$python_any" ]; then
    "$python_any" - "$OUT_DIR" <<'PY'
import json, os, sys
d = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(d, name)) as f:
            return [json.loads(l) for l in f if l.strip().startswith("{")]
    except OSError:
        return []
def big_busbw(objs):
    if not objs or not objs[0].get("rows"):
        return None
    r = objs[0]["rows"][-1]
    return r["size"], r["out_of_place"]["busbw"], r["in_place"]["busbw"], objs[0].get("wrong")
rows = []
for n in (1, 2):
    b = big_busbw(load(f"allreduce-{n}.json"))
    if b:
        rows.append((f"allreduce nccl {n} rank(s), {b[0]} B: busbw oop/ip GB/s", f"{b[1]:.1f} / {b[2]:.1f}", f"#wrong {b[3]}"))
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
echo "logs and JSON in $OUT_DIR"
[ "$failed" = 0 ] || echo "gpu.sh: a test FAILED (see above)"
exit "$failed"
