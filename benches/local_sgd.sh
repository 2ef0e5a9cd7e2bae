#!/usr/bin/env bash
# Time to accuracy: every-step gradient sync against --sync local on 2
# simulated hosts x 2 ranks (launch/sim-cluster.sh), all in one run:
# every-step f32, every-step --wire bf16, local H = 4, 16, 32, 64 with
# (alpha 1, mu 0), (alpha 0.7, Nesterov mu 0.9), alpha 1.5 (mu 0) and
# Nesterov mu 0.5 (alpha 1);
# the same steps each. Reports per setting: training wall time (rank 0's
# steps, evaluations left out), bytes sent per rank, final validation
# metrics, and "reach": the training time of the first evaluation at
# which every task metric (all higher-is-better) is within 1% absolute of
# the every-step f32 run's final value (>= final - 0.01). Then whether
# the issue's target holds (some local setting reaches in <= 0.5x the
# every-step f32 time with >= 16x fewer bytes), and the README's table
# (markdown) by itself; writes tta.png (`ringtrain plot`).
# Usage: benches/local_sgd.sh   (needs root: network namespaces)
# Environment: RATE (default 1gbit), STEPS (320: a multiple of every H,
# so that every round is whole; H=16 sends a hair under 16x fewer bytes,
# the round's step records are counted too), HIDDEN (1024,1024), EVAL_EVERY (16),
# SETTINGS (names to run, space-separated, default all; every-step-f32
# always runs first), OUT_DIR (default a fresh temporary directory).
set -euo pipefail

case "${1:-}" in
-h | --help)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=launch/setup.sh
source "$ROOT/launch/setup.sh"
cargo build --release --manifest-path "$ROOT/Cargo.toml" >&2
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/ringtrain"
SIM="$ROOT/launch/sim-cluster.sh"
OUT_DIR="${OUT_DIR:-$(mktemp -d)}"
mkdir -p "$OUT_DIR"
rate="${RATE:-1gbit}"
steps="${STEPS:-320}"
hidden="${HIDDEN:-1024,1024}"
eval_every="${EVAL_EVERY:-16}"
# The ring's 256 KiB chunks without a rendezvous handshake each (see
# docs/cluster.md: the raised eager limit), for every setting alike.
eager=(--mca btl_tcp_eager_limit 524288 --mca btl_tcp_rndv_eager_limit 524288
    --mca btl_tcp_max_send_size 524288)
# A smaller validation split keeps evaluation cheap (it is left out of
# the times anyway).
printf '[data]\nsynthetic_val = 2048\n' >"$OUT_DIR/bench.toml"

all_settings=(
    "every-step-f32|--sync every-step"
    "every-step-bf16|--sync every-step --wire bf16"
    "local-H4|--sync local --local-steps 4"
    "local-H16|--sync local --local-steps 16"
    "local-H32|--sync local --local-steps 32"
    "local-H64|--sync local --local-steps 64"
    "local-H4-nesterov|--sync local --local-steps 4 --outer-lr 0.7 --outer-momentum 0.9"
    "local-H16-nesterov|--sync local --local-steps 16 --outer-lr 0.7 --outer-momentum 0.9"
    "local-H64-nesterov|--sync local --local-steps 64 --outer-lr 0.7 --outer-momentum 0.9"
    "local-H16-a1.5|--sync local --local-steps 16 --outer-lr 1.5"
    "local-H32-a1.5|--sync local --local-steps 32 --outer-lr 1.5"
    "local-H16-m0.5|--sync local --local-steps 16 --outer-momentum 0.5"
    "local-H20-m0.5|--sync local --local-steps 20 --outer-momentum 0.5"
    "local-H32-m0.5|--sync local --local-steps 32 --outer-momentum 0.5"
)
settings=("${all_settings[0]}")
for s in "${all_settings[@]:1}"; do
    if [ -z "${SETTINGS:-}" ] || [[ " $SETTINGS " == *" ${s%%|*} "* ]]; then
        settings+=("$s")
    fi
done

prefix=""
cleanup() {
    [ -z "$prefix" ] || "$SIM" --prefix "$prefix" down >/dev/null 2>&1 || true
}
trap cleanup EXIT
set +e
out="$("$SIM" up 2 --link "$rate")"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "local_sgd.sh: sim-cluster up failed (exit $rc; 3 = no privileges: run as root)" >&2
    exit "$rc"
fi
prefix="${out#SIM_PREFIX=}"
for s in "${settings[@]}"; do
    name="${s%%|*}"
    read -r -a flags <<<"${s#*|}"
    echo "local_sgd.sh: $name (${flags[*]}), link $rate, $steps steps" >&2
    rm -f "$OUT_DIR/$name.jsonl"
    "$SIM" --prefix "$prefix" mpirun -np 4 "${eager[@]}" \
        "$bin" train --config "$OUT_DIR/bench.toml" --hidden "$hidden" --steps "$steps" \
        --eval-every "$eval_every" --log-every 100000 --metrics-out "$OUT_DIR/$name.jsonl" \
        "${flags[@]}" >"$OUT_DIR/$name.log"
done
"$SIM" --prefix "$prefix" down >/dev/null
prefix=""

load="$(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT_DIR" "$rate" "$steps" "$load" "${settings[@]%%|*}" <<'PY' | tee "$OUT_DIR/summary.txt"
import json, sys

out, rate, steps, load, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
KEYS = ("accuracy", "auc", "r2")

def read(name):
    train, evals = [], []
    for line in open(f"{out}/{name}.jsonl"):
        r = json.loads(line)
        if r["type"] == "train":
            train.append(r)
        elif r["type"] == "eval":
            evals.append(r)
    t, cum = 0.0, {}
    for r in train:
        t += r["step_time_s"]
        cum[r["step"]] = t
    curve = []
    for e in evals:
        m = {f"{task} {k}": v[k] for task, v in sorted(e["tasks"].items()) for k in KEYS if k in v}
        curve.append((cum[e["step"]], e["step"], m))
    return train, curve

runs = {n: read(n) for n in names}
base = runs[names[0]][1][-1][2]
base_time = runs[names[0]][1][-1][0]
base_bytes = runs[names[0]][0][-1]["bytes_sent_total"]

def label(n):
    # "local-H16-a1.5" -> "local H=16, α=1.5"
    if not n.startswith("local-"):
        return n.replace("-", " ", 1).replace("-", " ")
    parts = n.split("-")[1:]
    out = [parts[0].replace("H", "H=")]
    for p in parts[1:]:
        if p == "nesterov":
            out.append("α=0.7, μ=0.9")
        elif p.startswith("a"):
            out.append("α=" + p[1:])
        elif p.startswith("m"):
            out.append("μ=" + p[1:])
    return "local " + ", ".join(out)

print(f"2 simulated hosts x 2 ranks, link {rate}, {steps} steps; load average at the end: {load}")
print("time = rank 0's training time (sum of its step times; evaluation left out)")
print("reach = training time at the first evaluation where every metric is >= "
      f"{names[0]}'s final value - 0.01 (within 1% absolute; all metrics are higher-is-better)")
print(f"{'setting':<22} {'time s':>8} {'x base':>7} {'MiB sent':>9} {'/ base':>8} "
      f"{'reach s':>8} {'x base':>7}  final metrics")
plot, rows, met = [], [], []
for n in names:
    train, curve = runs[n]
    t, _, final = curve[-1]
    sent = train[-1]["bytes_sent_total"]
    reach = next((c[0] for c in curve if all(c[2][k] >= base[k] - 0.01 for k in base)), None)
    fewer = base_bytes / sent if sent else float("inf")
    ratio = f"{fewer:8.1f}" if sent else "       -"
    rs = f"{reach:8.1f} {reach / base_time:7.3f}" if reach is not None else f"{'never':>8} {'-':>7}"
    fm = " ".join(f"{k} {v:.4f}" for k, v in final.items())
    print(f"{n:<22} {t:8.1f} {t / base_time:7.3f} {sent / 2**20:9.1f} {ratio} {rs}  {fm}")
    if n.startswith("local") and reach is not None and reach <= 0.5 * base_time and fewer >= 16:
        met.append(f"{n} (reach {reach / base_time:.3f}x, {fewer:.1f}x fewer bytes)")
    shown = "1" if n == names[0] else (f"{fewer:.1f}×" if sent else "—")
    rows.append(f"| {label(n)} | {t:.1f} | {t / base_time:.3f} | {sent / 2**20:.1f} | {shown} | "
                + (f"{reach:.1f} | {reach / base_time:.3f}" if reach is not None else "never | —")
                + " | " + " / ".join(f"{v:.4f}" for v in final.values()) + " |")
    plot.append({"curve": n, "x_label": "training wall time (s), rank 0",
                 "points": {k: [[c[0], c[2][k]] for c in curve] for k in base}})
print()
if met:
    print("target (reach <= 0.5x every-step f32 time with >= 16x fewer bytes): MET by " + "; ".join(met))
else:
    print("target (reach <= 0.5x every-step f32 time with >= 16x fewer bytes): NOT met")
print()
print("README table (metrics: " + " / ".join(base) + "):")
print()
print("| setting | time (s) | ÷ every-step | MiB sent per rank | fewer bytes | reach (s) "
      "| ÷ every-step time | final " + " / ".join(base) + " |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(r)
with open(f"{out}/tta.jsonl", "w") as f:
    for p in plot:
        f.write(json.dumps(p) + "\n")
PY
"$bin" plot "$OUT_DIR/tta.jsonl" -o "$OUT_DIR/tta.png" \
    --title "validation metrics against training time, 2 hosts x 2 ranks, $rate" >&2
echo "local_sgd.sh: results in $OUT_DIR" >&2
