#!/usr/bin/env bash
# --balance even vs auto with one of 3 ranks slowed 2× (RINGTRAIN_FAULT
# slow@2:2, and slow@2:2:8: every rank's compute stretched 8×, mostly
# sleeping, so that 3 ranks on a few shared cores hardly compete), measured
# side by side in interleaved rounds: bench train's step against the ideal
# for the measured speeds (global batch / Σ per-rank compute samples/s).
# Usage: benches/balance.sh   (ROUNDS=3; JSON lines in $OUT_DIR)
set -euo pipefail

case "${1:-}" in
-h | --help)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=launch/setup.sh
source "$ROOT/launch/setup.sh"
cargo build --release --manifest-path "$ROOT/Cargo.toml" >&2
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/ringtrain"
OUT_DIR="${OUT_DIR:-$(mktemp -d)}"
ROUNDS="${ROUNDS:-3}"
mkdir -p "$OUT_DIR"
m=(mpirun -np 3 --oversubscribe --mca mpi_yield_when_idle 1)
[ "$(id -u)" = 0 ] && m+=(--allow-run-as-root)
# shellcheck disable=SC2054 # 128,128 is one argument
args=(bench train --json --batch-per-rank 1000 --hidden 128,128 --warmup 60 --iters 100 --balance-every 10)
for fault in slow@2:2:8 slow@2:2; do
    for r in $(seq "$ROUNDS"); do
        for mode in even auto; do
            RINGTRAIN_FAULT=$fault "${m[@]}" "$bin" "${args[@]}" --balance "$mode" |
                python3 -c "import json,sys; d=json.load(sys.stdin); d['fault']='$fault'; d['round']=$r; print(json.dumps(d))" |
                tee -a "$OUT_DIR/balance.jsonl" >/dev/null
        done
    done
done
python3 - "$OUT_DIR/balance.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for fault in dict.fromkeys(r["fault"] for r in rows):
    print(f"RINGTRAIN_FAULT={fault}")
    for mode in ("even", "auto"):
        rs = [r for r in rows if r["fault"] == fault and r["balance"]["mode"] == mode]
        ratio = [r["balance"]["step_vs_ideal"] for r in rs]
        step = [r["ms"]["step"] for r in rs]
        parts = ["/".join(map(str, r["balance"]["partition"])) for r in rs]
        print(f"  {mode:5} step/ideal median {statistics.median(ratio):.2f} (runs {', '.join(f'{x:.2f}' for x in ratio)})"
              f" | step median {statistics.median(step):.1f} ms | partitions {', '.join(parts)}")
    e = statistics.median(r["ms"]["step"] for r in rows if r["fault"] == fault and r["balance"]["mode"] == "even")
    a = statistics.median(r["ms"]["step"] for r in rows if r["fault"] == fault and r["balance"]["mode"] == "auto")
    print(f"  auto step / even step (medians): {a / e:.2f}")
PY
echo "JSON: $OUT_DIR/balance.jsonl"
