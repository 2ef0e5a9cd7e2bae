#!/usr/bin/env bash
# A/B of two ringtrain binaries on `bench train`, interleaved (old, new,
# old, new, ...), medians and new/old ratios. `cpu` rows: the main thread's
# CPU time (ms), which neighbours on shared cores disturb less than wall time;
# `cpu s/g` = GEMM-only / step CPU time (the step's share of GEMM speed).
# Usage: benches/ab.sh OLD_BIN NEW_BIN NP REPEAT [bench train args...]
# e.g.   benches/ab.sh target/base-ringtrain target/release/ringtrain 1 5 --hidden 64
set -euo pipefail
old=$1 new=$2 np=$3 repeat=$4
shift 4
m=(mpirun -np "$np")
[ "$(id -u)" = 0 ] && m+=(--allow-run-as-root)
[ "$np" -gt "$(nproc)" ] && m+=(--oversubscribe --mca mpi_yield_when_idle 1)
out=$(mktemp -d)
for r in $(seq "$repeat"); do
    for which in old new; do
        bin=$old
        [ $which = new ] && bin=$new
        if [ "$np" = 1 ]; then
            "$bin" bench train --json "$@" >"$out/$which.$r.json"
        else
            "${m[@]}" "$bin" bench train --json "$@" >"$out/$which.$r.json"
        fi
    done
done
python3 - "$out" "$repeat" "$*" <<'PY'
import json, sys, statistics as st
d, n, args = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(w):
    return [json.load(open(f"{d}/{w}.{r}.json")) for r in range(1, n + 1)]
o, nw = load("old"), load("new")
med = lambda docs, f: st.median(f(x) for x in docs)
print(f"args: {args or '(default)'}; medians of {n} interleaved runs")
print(f"{'':10}{'old':>12}{'new':>12}{'new/old':>10}")
rows = [("samples/s", lambda x: x["samples_per_s_per_rank"]),
        ("step ms", lambda x: x["ms"]["step"]),
        ("fwd ms", lambda x: x["ms"]["forward"]),
        ("bwd ms", lambda x: x["ms"]["backward"]),
        ("update ms", lambda x: x["ms"]["update"]),
        ("comm ms", lambda x: x["ms"]["allreduce"]),
        ("gemm ms", lambda x: x["ms"]["gemm_only"]),
        ("step/gemm", lambda x: x["step_vs_gemm_only"]),
        ("cpu step", lambda x: x["thread_cpu_ms"]["step"]),
        ("cpu gemm", lambda x: x["thread_cpu_ms"]["gemm_only"]),
        ("cpu s/g", lambda x: x["thread_cpu_ms"]["gemm_only"] / x["thread_cpu_ms"]["step"])]
for name, f in rows:
    a, b = med(o, f), med(nw, f)
    print(f"{name:10}{a:12.3f}{b:12.3f}{b / a if a else float('nan'):10.3f}")
PY
