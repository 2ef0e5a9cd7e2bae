#!/usr/bin/env bash
# CPU benchmarks, each figure beside its baseline measured in the same run:
#   1. bench train: 1 rank vs 2 ranks (per-rank samples/s ratio), step vs
#      GEMM-only GFLOP/s, overlap on vs off (exposed all-reduce share);
#   2. bench allreduce --vs-mpi: ring vs MPI_Allreduce busbw at 2 and 4 ranks, same run;
#   3. overlap auto vs on vs off, 2 ranks, at a tiny, the default and a wide model;
#   4. peers: PyTorch (benches/torch_cpu.py: eager, torch.compile, DDP/gloo at
#      1 and 2 processes, one thread each) beside ringtrain at 1 and 2 ranks,
#      at the default model, 1024,1024,1024 GELU and a tiny one (torch is
#      installed by this script into target/torch-venv from PyPI).
# Usage: benches/cpu.sh [--quick]   (REPEAT=3 runs, medians; JSON in $OUT_DIR;
#   PARTS="train allreduce overlap peers" picks the parts)
set -euo pipefail

case "${1:-}" in
-h | --help)
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
quick=0
[ "${1:-}" = "--quick" ] && quick=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=launch/setup.sh
source "$ROOT/launch/setup.sh"
cargo build --release --manifest-path "$ROOT/Cargo.toml" >&2
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/ringtrain"
OUT_DIR="${OUT_DIR:-$(mktemp -d)}"
mkdir -p "$OUT_DIR"
cores=$(nproc)
run_np() { # NP CMD...: mpirun as a user would; oversubscribed ranks must yield
    local np=$1
    shift
    local m=(mpirun -np "$np")
    [ "$(id -u)" = 0 ] && m+=(--allow-run-as-root)
    [ "$np" -gt "$cores" ] && m+=(--oversubscribe --mca mpi_yield_when_idle 1)
    "${m[@]}" "$@"
}
repeat=${REPEAT:-3}

iters=200
[ $quick = 1 ] && iters=30
train() { # NAME NP ARGS...
    local name=$1 np=$2
    shift 2
    run_np "$np" "$bin" bench train --iters "$iters" --json "$@" >"$OUT_DIR/$name.$r.json"
}
parts=" ${PARTS:-train allreduce overlap peers} "
has() { [[ "$parts" == *" $1 "* ]]; }
# The models of parts 3 and 4: name, bench train flags, iterations.
models=(tiny default wide)
model_args() {
    case $1 in
    tiny) echo "--hidden 64 --batch-per-rank 32" ;;
    default) echo "" ;;
    wide) echo "--hidden 1024,1024,1024 --activation gelu" ;;
    esac
}
model_iters() {
    local n
    case $1 in tiny) n=2000 ;; default) n=200 ;; wide) n=10 ;; esac
    [ $quick = 1 ] && n=$((n / 5 + 1))
    echo $n
}
if has peers; then
    venv="${CARGO_TARGET_DIR:-$ROOT/target}/torch-venv"
    if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
        # PyPI has no CPU-only torch wheel for Linux, and its wheel does
        # not import without the nvidia-* packages it pulls (checked with
        # torch 2.15.0: `pip install --no-deps torch` fails at import,
        # libcudart.so.13 not found), so this is the full install: 5.4 GB,
        # about 9 minutes here.
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q torch numpy >&2
    fi
fi
# Interleaved repeats; the table shows medians.
for r in $(seq "$repeat"); do
    if has train; then
        train t1 1
        train t2 2
        train t2_off 2 --no-overlap
    fi
    if has allreduce; then
        # MPI_Allreduce timed right after each ring row, in the same run
        # (--vs-mpi): this VM's speed swings between runs.
        for np in 2 4; do
            run_np "$np" "$bin" bench allreduce -b 1M -e 64M -f 4 -n 100 --comm ring --vs-mpi --json \
                >"$OUT_DIR/ar_ring_$np.$r.json"
        done
    fi
    for m in "${models[@]}"; do
        # shellcheck disable=SC2046
        if has overlap; then
            for ov in auto on off; do
                run_np 2 "$bin" bench train --iters "$(model_iters "$m")" --json $(model_args "$m") \
                    --overlap $ov >"$OUT_DIR/ov_${m}_$ov.$r.json"
            done
        fi
        # shellcheck disable=SC2046
        if has peers; then
            for np in 1 2; do
                run_np "$np" "$bin" bench train --iters "$(model_iters "$m")" --json $(model_args "$m") \
                    >"$OUT_DIR/rt_${m}_$np.$r.json"
            done
            targs=(--iters "$(model_iters "$m")" --json)
            case $m in
            tiny) targs+=(--hidden 64 --batch-per-rank 32) ;;
            wide) targs+=(--hidden "1024,1024,1024" --activation gelu) ;;
            esac
            OMP_NUM_THREADS=1 "$venv/bin/python" "$ROOT/benches/torch_cpu.py" "${targs[@]}" \
                >"$OUT_DIR/torch_${m}.$r.jsonl"
        fi
    done
done

uptime_load=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$OUT_DIR" "$repeat" "$parts" "$uptime_load" <<'PY'
import json, sys, os, statistics
d, repeat, parts, load = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4]

def median_tree(docs):
    # The element-wise median of JSON documents of the same shape.
    a = docs[0]
    if isinstance(a, dict):
        return {k: median_tree([x[k] for x in docs]) for k in a}
    if isinstance(a, list):
        return [median_tree([x[i] for x in docs]) for i in range(len(a))]
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return statistics.median(docs)
    return a

j = lambda n: median_tree([json.load(open(os.path.join(d, f"{n}.{r}.json"))) for r in range(1, repeat + 1)])
print(f"medians of {repeat} interleaved runs; load average at the end {load}")
def jl(n):
    # The per-mode medians of JSON-lines files (benches/torch_cpu.py).
    runs = [[json.loads(l) for l in open(os.path.join(d, f"{n}.{r}.jsonl")) if l.strip()]
            for r in range(1, repeat + 1)]
    return {m["mode"]: median_tree([run[i] for run in runs]) for i, m in enumerate(runs[0])}

models = {"tiny": "tiny 32 -> 64 -> 7, 32 samples/rank",
          "default": "default 32 -> 256,256 -> 7, 256 samples/rank",
          "wide": "32 -> 1024,1024,1024 GELU -> 7, 256 samples/rank"}
if "train" in parts:
    t1, t2, off = j("t1"), j("t2"), j("t2_off")
    print("bench train (default model, 256 samples/rank/step)")
    print(f"  1 rank : {t1['samples_per_s_per_rank']:9.0f} samples/s   step {t1['gflops']:.2f} GFLOP/s"
          f" vs GEMM-only {t1['gemm_only_gflops']:.2f}  ratio {t1['step_vs_gemm_only']:.3f}")
    for name, r in (("2 ranks", t2), ("2 ranks, no overlap", off)):
        ms = r["ms"]
        exp = ms["grad_allreduce_exposed"] / ms["grad_allreduce_total"] if ms["grad_allreduce_total"] else 0
        print(f"  {name:19s}: {r['samples_per_s_per_rank']:9.0f} samples/s per rank"
              f" = {r['samples_per_s_per_rank'] / t1['samples_per_s_per_rank']:.3f} x 1 rank;"
              f" step/GEMM-only {r['step_vs_gemm_only']:.3f};"
              f" all-reduce {ms['grad_allreduce_total']:.3f} ms, exposed {100 * exp:.1f}%")
    print(f"  peak RSS per rank {t2['peak_rss_mib']:.1f} MiB (start {t2['start_rss_mib']:.1f}), estimate {t2['estimate_mib']:.1f} MiB")
if "allreduce" in parts:
    print("bench allreduce --vs-mpi: busbw (GB/s), ring vs MPI_Allreduce timed in the same run;"
          " x = ring time / its alpha-beta model; bound = ring / shared-memory bound")
    for np in (2, 4):
        ring = j(f"ar_ring_{np}")
        print(f"  np={np}: ring over {ring['transport']}")
        for a in ring["rows"]:
            b = a["mpi"]
            ro, ri = a["out_of_place"]["busbw"], a["in_place"]["busbw"]
            mo, mi = b["out_of_place"]["busbw"], b["in_place"]["busbw"]
            bound = a.get("shm_bound_busbw")
            frac = f" | bound {ro / bound:4.2f} (oop) {ri / bound:4.2f} (ip)" if bound else ""
            print(f"  np={np} {a['size']:>9} B  out-of-place ring {ro:5.2f} mpi {mo:5.2f} ratio {ro / mo:4.2f}"
                  f" | in-place ring {ri:5.2f} mpi {mi:5.2f} ratio {ri / mi:4.2f}"
                  f" | x {a['x_out_of_place']:.2f} (oop) {a['x_in_place']:.2f} (ip){frac}"
                  f" | wrong {a['out_of_place']['wrong'] + a['in_place']['wrong']}")
if "overlap" in parts:
    print("overlap, 2 ranks (bench train, samples/s per rank; auto's choice in brackets)")
    print("| model | auto | on | off | auto / off | auto / on |")
    print("|---|---|---|---|---|---|")
    for m, label in models.items():
        r = {ov: j(f"ov_{m}_{ov}") for ov in ("auto", "on", "off")}
        s = {ov: x["samples_per_s_per_rank"] for ov, x in r.items()}
        why = r["auto"]["comm"].get("overlap_why", "")
        print(f"| {label} | {s['auto']:,.0f} [{why}] | {s['on']:,.0f} | {s['off']:,.0f}"
              f" | {s['auto'] / s['off']:.2f} | {s['auto'] / s['on']:.2f} |")
if "peers" in parts:
    print("peers: samples/s per rank (process), one thread each; ringtrain bench train vs benches/torch_cpu.py")
    print("| model | params ringtrain / torch | ringtrain 1 rank | ringtrain 2 ranks | torch eager | torch.compile"
          " | DDP gloo 1 | DDP gloo 2 | 1 rank / eager | 1 rank / compile | 2 ranks / DDP 2 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for m, label in models.items():
        r1, r2, t = j(f"rt_{m}_1"), j(f"rt_{m}_2"), jl(f"torch_{m}")
        s1, s2 = r1["samples_per_s_per_rank"], r2["samples_per_s_per_rank"]
        ts = {k: v["samples_per_s_per_rank"] for k, v in t.items()}
        tp = next(iter(t.values()))["params"]
        print(f"| {label} | {r1['model']['params']:,} / {tp:,} | {s1:,.0f} | {s2:,.0f} | {ts['eager']:,.0f}"
              f" | {ts['compile']:,.0f} | {ts['ddp1']:,.0f} | {ts['ddp2']:,.0f}"
              f" | {s1 / ts['eager']:.2f} | {s1 / ts['compile']:.2f} | {s2 / ts['ddp2']:.2f} |")
    print("torch", next(iter(jl("torch_default").values()))["torch"])
PY
echo "JSON in $OUT_DIR" >&2
