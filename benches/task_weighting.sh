#!/usr/bin/env bash
# What the task diagnostics and GradNorm cost: `ringtrain train` on the
# default model with --task-stats-every off / 50 / 1 and with
# --task-weighting gradnorm, interleaved rounds, medians over the timed
# steps of each run's `--metrics-out` train records (compute = forward +
# backward + update, comm = the step's communication time), and ratios to
# the run without diagnostics from the same round.
# Usage: benches/task_weighting.sh [NP] [ROUNDS]   (default 2 ranks, 3 rounds)
set -euo pipefail
case "${1:-}" in
-h | --help)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
np=${1:-2}
rounds=${2:-3}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=launch/setup.sh disable=SC1091
source "$ROOT/launch/setup.sh"
cargo build --release --manifest-path "$ROOT/Cargo.toml" >&2
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/ringtrain"
out=$(mktemp -d)
m=(mpirun -np "$np")
[ "$(id -u)" = 0 ] && m+=(--allow-run-as-root)
[ "$np" -gt "$(nproc)" ] && m+=(--oversubscribe --mca mpi_yield_when_idle 1)
settings=("off" "every50:--task-stats-every 50" "every1:--task-stats-every 1"
    "gradnorm:--task-weighting gradnorm")
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
    for s in "${settings[@]}"; do
        name=${s%%:*}
        extra=()
        [ "$name" = off ] || read -r -a extra <<<"${s#*:}"
        "${m[@]}" "$bin" train --steps 300 --eval-every 0 --log-every 0 \
            --metrics-out "$out/$name.$r.jsonl" "${extra[@]}" >/dev/null
    done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" "$rounds" "$np" <<'PY'
import json, sys, statistics as st
d, n, np_ = sys.argv[1], int(sys.argv[2]), sys.argv[3]
names = ["off", "every50", "every1", "gradnorm"]
def per_run(name, r):
    rs = [json.loads(l) for l in open(f"{d}/{name}.{r}.jsonl")]
    tr = [x for x in rs if x.get("type") == "train"][20:]  # past the warm-up
    comp = st.mean(x["forward_time_s"] + x["backward_time_s"] + x["update_time_s"] for x in tr)
    comm = st.mean(x["comm_time_s"] for x in tr)
    step = st.mean(x["step_time_s"] for x in tr)
    return comp, comm, step
rows = {k: [per_run(k, r) for r in range(1, n + 1)] for k in names}
print(f"default model, {np_} rank(s), 300 steps, {n} interleaved rounds, medians")
print("| setting | compute ms/step | comm ms/step | step ms | step ÷ off (same round, median) |")
print("|---|---|---|---|---|")
for k in names:
    comp = st.median(x[0] for x in rows[k]) * 1e3
    comm = st.median(x[1] for x in rows[k]) * 1e3
    step = st.median(x[2] for x in rows[k]) * 1e3
    ratio = st.median(rows[k][i][2] / rows["off"][i][2] for i in range(n))
    print(f"| {k} | {comp:.3f} | {comm:.3f} | {step:.3f} | {ratio:.2f} |")
PY
