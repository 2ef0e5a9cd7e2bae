#!/usr/bin/env bash
# --balance even vs auto with one of 3 ranks 2× slower than the others,
# measured side by side in interleaved rounds: bench train's step against
# the ideal for the measured speeds (global batch / Σ per-rank compute
# samples/s). Two setups (SETUPS="quota sleep"):
#   quota  a core (part of one) per rank, emulated with cgroup CPU quotas
#          (benches/cpu_quota.sh): ranks 0,1 at 0.6 CPU, rank 2 at 0.3
#          (QUOTA_CPUS, PERIOD_US); real compute, no fault; and even with
#          equal quotas (EQUAL_CPUS=0.5 each): the floor, where balance
#          has nothing left to gain. Needs root and a cgroup cpu
#          controller, else exit 3 (SETUPS=sleep skips it). QUOTA_BATCH
#          (default 32000) is each rank's even share: larger steps make
#          the quota's fixed cost at each collective a smaller part.
#   sleep  RINGTRAIN_FAULT=slow@2:2:8: every rank's compute stretched 8×,
#          mostly sleeping, rank 2's 16×.
# Prints the README table (medians over ROUNDS=3 rounds; JSON lines in
# $OUT_DIR). Usage: benches/balance.sh
set -euo pipefail

case "${1:-}" in
-h | --help)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SETUPS="${SETUPS:-quota sleep}"
ROUNDS="${ROUNDS:-3}"
QUOTA_CPUS="${QUOTA_CPUS:-0.6 0.6 0.3}"
# A short CFS period: a throttled rank waits at most PERIOD_US minus its
# quota, so a collective that meets one is not held up long.
PERIOD_US="${PERIOD_US:-5000}"
# Weight of the ranks' cgroups against other work on the machine (the
# quotas cap them; this lets them reach their quotas on a busy machine).
export CPU_SHARES="${CPU_SHARES:-8192}"
quota="$ROOT/benches/cpu_quota.sh"
EQUAL_CPUS="${EQUAL_CPUS:-0.5 0.5 0.5}"
cg_name="ringtrain-balance-$$"
cg_dir=""
if [[ " $SETUPS " == *" quota "* ]]; then
    # Two sets: the uneven quotas, and equal ones (the floor: what even
    # reaches when the ranks are equally fast).
    # shellcheck disable=SC2086 # one CPU figure per rank
    cg_dir=$("$quota" create "$cg_name" "$PERIOD_US" $QUOTA_CPUS) || {
        rc=$?
        echo "benches/balance.sh: no CPU quotas here (see above); SETUPS=sleep runs without them" >&2
        exit "$rc"
    }
    trap '"$quota" remove "$cg_dir" "$cg_name"; "$quota" remove "$cg_dir" "$cg_name-equal"' EXIT
    trap 'exit 130' INT TERM
    # shellcheck disable=SC2086 # one CPU figure per rank
    "$quota" create "$cg_name-equal" "$PERIOD_US" $EQUAL_CPUS >/dev/null
fi
# shellcheck source=launch/setup.sh disable=SC1091
source "$ROOT/launch/setup.sh"
cargo build --release --manifest-path "$ROOT/Cargo.toml" >&2
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/ringtrain"
OUT_DIR="${OUT_DIR:-$(mktemp -d)}"
mkdir -p "$OUT_DIR"
m=(mpirun -np 3 --oversubscribe --mca mpi_yield_when_idle 1)
[ "$(id -u)" = 0 ] && m+=(--allow-run-as-root)
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for setup in $SETUPS; do
    case $setup in
    quota)
        # Real compute, long enough steps (~0.2 s) that the CFS period and
        # the all-reduce are small beside them; no overlap, so each rank's
        # quota goes to one busy thread (the comm thread would spin in MPI
        # while the compute runs, on the same quota).
        fault=""
        launch=("$quota" exec "$cg_dir" "$cg_name" "$bin")
        # shellcheck disable=SC2054 # 128,128 is one argument
        args=(--batch-per-rank "${QUOTA_BATCH:-32000}" --hidden 128,128 --warmup 40 --iters 60 --balance-every 5 --no-overlap)
        ;;
    sleep)
        fault=slow@2:2:8
        launch=("$bin")
        # shellcheck disable=SC2054 # 128,128 is one argument
        args=(--batch-per-rank 1000 --hidden 128,128 --warmup 60 --iters 100 --balance-every 10)
        ;;
    *)
        echo "benches/balance.sh: unknown setup '$setup' (quota, sleep)" >&2
        exit 2
        ;;
    esac
    for r in $(seq "$ROUNDS"); do
        for mode in even auto equal; do
            [ "$mode" != equal ] || [ "$setup" = quota ] || continue
            run=("${launch[@]}")
            [ "$mode" != equal ] || run=("$quota" exec "$cg_dir" "$cg_name-equal" "$bin")
            # shellcheck disable=SC2086 # no fault: no variable at all
            env ${fault:+RINGTRAIN_FAULT=$fault} "${m[@]}" "${run[@]}" bench train --json "${args[@]}" --balance "${mode/equal/even}" |
                python3 -c "import json,sys; d=json.load(sys.stdin); d['setup']='$setup'; d['round']=$r; d['args']=sys.argv[1]; d['equal']='$mode'=='equal'; print(json.dumps(d))" "${args[*]}" |
                tee -a "$OUT_DIR/balance.jsonl" >/dev/null
        done
    done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 "$ROOT/benches/balance_table.py" "$OUT_DIR/balance.jsonl" "$QUOTA_CPUS" "$PERIOD_US" "$EQUAL_CPUS"
echo "JSON: $OUT_DIR/balance.jsonl"
