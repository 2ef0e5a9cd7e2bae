#!/usr/bin/env bash
# CPU benchmarks, each figure beside its baseline measured in the same run:
#   1. bench train: 1 rank vs 2 ranks (per-rank samples/s ratio), step vs
#      GEMM-only GFLOP/s, overlap on vs off (exposed all-reduce share);
#   2. bench allreduce: ring vs MPI_Allreduce busbw at 2 and 4 ranks.
# Usage: benches/cpu.sh [--quick]   (REPEAT=3 runs, medians; JSON in $OUT_DIR)
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
# Interleaved repeats; the table shows medians.
for r in $(seq "$repeat"); do
    train t1 1
    train t2 2
    train t2_off 2 --no-overlap
    for np in 2 4; do
        for c in ring mpi; do
            run_np "$np" "$bin" bench allreduce -b 1M -e 64M -f 4 -n 20 --comm "$c" --json \
                >"$OUT_DIR/ar_${c}_$np.$r.json"
        done
    done
done

python3 - "$OUT_DIR" "$repeat" <<'PY'
import json, sys, os, statistics
d, repeat = sys.argv[1], int(sys.argv[2])

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
print(f"medians of {repeat} interleaved runs")
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
print("bench allreduce: busbw (GB/s), ring vs MPI_Allreduce; x = ring time / its alpha-beta model")
for np in (2, 4):
    ring, mpi = j(f"ar_ring_{np}"), j(f"ar_mpi_{np}")
    for a, b in zip(ring["rows"], mpi["rows"]):
        ro, ri = a["out_of_place"]["busbw"], a["in_place"]["busbw"]
        mo, mi = b["out_of_place"]["busbw"], b["in_place"]["busbw"]
        print(f"  np={np} {a['size']:>9} B  out-of-place ring {ro:5.2f} mpi {mo:5.2f} ratio {ro / mo:4.2f}"
              f" | in-place ring {ri:5.2f} mpi {mi:5.2f} ratio {ri / mi:4.2f}"
              f" | x {a['x_out_of_place']:.2f} (oop) {a['x_in_place']:.2f} (ip)"
              f" | wrong {a['out_of_place']['wrong'] + a['in_place']['wrong']}")
PY
echo "JSON in $OUT_DIR" >&2
