#!/usr/bin/env bash
# All-reduce and training across 2 simulated hosts (launch/sim-cluster.sh),
# 1 rank per host, at several link rates; every figure beside its baseline
# from the same run:
#   1. bench allreduce: ring vs MPI_Allreduce over TCP, f32 vs --wire bf16,
#      each with OpenMPI's TCP defaults and with the TCP eager limit raised
#      to the ring's chunk (what ringtrain sets itself: no rendezvous
#      handshake per chunk); busbw against the link's bound, the alpha-beta
#      model fitted per link;
#   2. bench train --hidden 1024,1024 at the first rate: overlap on vs off;
#   3. the link's baseline: plain TCP in both directions (benches/tcp_bidi.py).
# Usage: benches/cluster.sh [--quick]   (needs root: network namespaces)
# Environment: RATES (default "1gbit 10gbit none"), REPEAT (default 3:
# rounds over all configurations, interleaved; medians), OUT_DIR (JSON,
# PNG, summary.txt; default a fresh temporary directory).
set -euo pipefail

case "${1:-}" in
-h | --help)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
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
SIM="$ROOT/launch/sim-cluster.sh"
OUT_DIR="${OUT_DIR:-$(mktemp -d)}"
mkdir -p "$OUT_DIR"
read -r -a rates <<<"${RATES:-1gbit 10gbit none}"
repeat="${REPEAT:-3}"
[ $quick = 0 ] || repeat="${REPEAT:-1}"

sizes=(-b 1M -e 64M -f 4 -n 5 -w 1)
[ $quick = 1 ] && sizes=(-b 1M -e 16M -f 4 -n 3 -w 1)
train_iters=(--iters 20 --warmup 3)
[ $quick = 1 ] && train_iters=(--iters 5 --warmup 1)
# The ring's chunk is 256 KiB (src/comm/ring/mod.rs); OpenMPI's TCP eager
# limit is 64 KiB, above which every message waits for a handshake.
# ringtrain raises it to 512 KiB itself unless the user set it
# (src/comm/ompi_tcp.rs): "eager" is ringtrain's own setting (no flags),
# "default" passes OpenMPI's defaults explicitly, which ringtrain leaves
# alone.
defaults=(--mca btl_tcp_eager_limit 65536 --mca btl_tcp_rndv_eager_limit 65536
    --mca btl_tcp_max_send_size 131072)

prefix=""
cleanup() {
    [ -z "$prefix" ] || "$SIM" --prefix "$prefix" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

for rate in "${rates[@]}"; do
    set +e
    out="$("$SIM" up 2 --link "$rate")"
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "cluster.sh: sim-cluster up failed (exit $rc; 3 = no privileges: run as root)" >&2
        exit "$rc"
    fi
    prefix="${out#SIM_PREFIX=}"
    for ((r = 1; r <= repeat; r++)); do
        # The link's baseline: plain TCP, both directions at once.
        echo "cluster.sh: round $r/$repeat, link $rate: TCP both ways (benches/tcp_bidi.py)" >&2
        "$SIM" --prefix "$prefix" exec 1 python3 "$ROOT/benches/tcp_bidi.py" server 5999 67108864 &
        server=$!
        "$SIM" --prefix "$prefix" exec 0 python3 "$ROOT/benches/tcp_bidi.py" client "$prefix-h1" 5999 67108864 \
            >"$OUT_DIR/tcp-$rate-r$r.json"
        wait "$server"
        for tcp in default eager; do
            mca=()
            [ "$tcp" = eager ] || mca=("${defaults[@]}")
            for cfg in "ring f32" "ring bf16" "mpi f32"; do
                read -r comm wire <<<"$cfg"
                echo "cluster.sh: round $r/$repeat, link $rate, tcp $tcp: bench allreduce --comm $comm --wire $wire" >&2
                "$SIM" --prefix "$prefix" mpirun -np 2 --map-by node "${mca[@]}" \
                    "$bin" bench allreduce "${sizes[@]}" --comm "$comm" --wire "$wire" --json \
                    >"$OUT_DIR/allreduce-$rate-$comm-$wire-$tcp-r$r.json"
            done
            [ "$rate" = "${rates[0]}" ] || continue
            for ov in on off; do
                flag=()
                [ "$ov" = on ] || flag=(--no-overlap)
                echo "cluster.sh: round $r/$repeat, link $rate, tcp $tcp: bench train --hidden 1024,1024, overlap $ov" >&2
                "$SIM" --prefix "$prefix" mpirun -np 2 --map-by node "${mca[@]}" \
                    "$bin" bench train --hidden 1024,1024 "${train_iters[@]}" "${flag[@]}" --json \
                    >"$OUT_DIR/train-$rate-$tcp-overlap-$ov-r$r.json"
            done
        done
    done
    "$SIM" --prefix "$prefix" down >/dev/null
    prefix=""
done

load="$(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT_DIR" "$repeat" "$load" "${rates[@]}" <<'PY' | tee "$OUT_DIR/summary.txt"
import json, os, statistics, sys

out, repeat, load, rates = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
CONFIGS = (("ring", "f32"), ("ring", "bf16"), ("mpi", "f32"))

def load_json(path):
    with open(path) as f:
        return json.load(f)

def bound(rate):  # the link's bytes per second, None when unlimited
    for u, m in {"gbit": 1e9, "mbit": 1e6, "kbit": 1e3}.items():
        if rate.endswith(u):
            return float(rate[: -len(u)]) * m / 8
    return None

def median_run(runs):
    """One run whose rows hold, per size, the row of the median
    out-of-place time over the rounds (alpha-beta: medians too)."""
    base = json.loads(json.dumps(runs[0]))
    for i, row in enumerate(base["rows"]):
        rows = sorted((r["rows"][i] for r in runs), key=lambda x: x["out_of_place"]["time_us"])
        base["rows"][i] = rows[len(rows) // 2]
    for k in ("alpha_us", "beta_gbps"):
        vals = [r["model"][k] for r in runs if r.get("model")]
        if vals:
            base["model"][k] = statistics.median(vals)
    base["wrong"] = sum(r.get("wrong", 0) for r in runs)
    return base

print(f"2 simulated hosts x 1 rank, {repeat} round(s), medians; load average at the end: {load}")
print("busbw in GB/s (out-of-place, of the f32 message size); % = busbw on the wire")
print("(bf16: half the bytes) / link rate; #wrong summed over all rounds and configurations")
for rate in rates:
    b = bound(rate)
    print(f"\nlink {rate}" + (f" (bound {b / 1e9:.4f} GB/s)" if b else " (no limit)"))
    tcp_runs = [load_json(os.path.join(out, f"tcp-{rate}-r{r}.json")) for r in range(1, repeat + 1)
                if os.path.exists(os.path.join(out, f"tcp-{rate}-r{r}.json"))]
    if tcp_runs:
        t = statistics.median(x["gbytes_per_s"] for x in tcp_runs)
        print(f"  plain TCP, both directions at once (64 MiB each way): {t:.4f} GB/s per direction"
              + (f" = {100 * t * 1e9 / b:.1f}% of the link" if b else ""))
    med_all = []
    for tcp in ("default", "eager"):
        runs = {}
        for comm, wire in CONFIGS:
            rs = [load_json(os.path.join(out, f"allreduce-{rate}-{comm}-{wire}-{tcp}-r{r}.json"))
                  for r in range(1, repeat + 1)
                  if os.path.exists(os.path.join(out, f"allreduce-{rate}-{comm}-{wire}-{tcp}-r{r}.json"))]
            if rs:
                runs[(comm, wire)] = median_run(rs)
                med_all.append(runs[(comm, wire)])
        if not runs:
            continue
        wrong = sum(r["wrong"] for r in runs.values())
        print(f"  OpenMPI TCP {tcp}" + (" (btl_tcp_eager_limit 512 KiB, ringtrain's own setting)" if tcp == "eager" else " (OpenMPI's, passed with --mca)") + f", #wrong {wrong}:")
        for (comm, wire), r in runs.items():
            m = r.get("model") or {}
            if m:
                print(f"    {comm} {wire}: alpha {m['alpha_us']:.1f} us, beta {m['beta_gbps']:.4f} GB/s")
        print("    size(B)     ring f32          ring bf16         mpi f32           bf16/f32 time  ring/mpi time")
        f32 = runs.get(("ring", "f32"))
        if not f32:
            continue
        for i, row in enumerate(f32["rows"]):
            cells, t = [], {}
            for key in CONFIGS:
                r = runs.get(key)
                if not r or i >= len(r["rows"]):
                    cells.append(" " * 17)
                    continue
                o = r["rows"][i]["out_of_place"]
                t[key] = o["time_us"]
                wire_bytes = 0.5 if key[1] == "bf16" else 1.0
                pct = f"{100 * o['busbw'] * wire_bytes * 1e9 / b:5.1f}%" if b else "      "
                cells.append(f"{o['busbw']:7.4f} {pct}   ")
            ratio_w = t[("ring", "bf16")] / t[("ring", "f32")] if ("ring", "bf16") in t else float("nan")
            ratio_m = t[("ring", "f32")] / t[("mpi", "f32")] if ("mpi", "f32") in t else float("nan")
            print(f"    {row['size']:>9}   {''.join(cells)}{ratio_w:8.3f}      {ratio_m:8.3f}")
    # The plot's input: the median runs, default TCP first ("#2": eager).
    with open(os.path.join(out, f"allreduce-{rate}.json"), "w") as f:
        for r in med_all:
            f.write(json.dumps(r) + "\n")

first = rates[0]
rows = []
for tcp in ("default", "eager"):
    for ov in ("on", "off"):
        rs = [load_json(os.path.join(out, f"train-{first}-{tcp}-overlap-{ov}-r{r}.json"))
              for r in range(1, repeat + 1)
              if os.path.exists(os.path.join(out, f"train-{first}-{tcp}-overlap-{ov}-r{r}.json"))]
        if rs:
            rs.sort(key=lambda x: x["ms"]["step"])
            rows.append((tcp, ov, rs[len(rs) // 2]))
if rows:
    print(f"\nbench train --hidden 1024,1024 (1,090,567 parameters, 4.2 MiB of gradients) at link {first}:")
    print("ms per step (means over the timed iterations; the round with the median step time)")
    print("  tcp      overlap  step     all-reduce  exposed  exposed share")
    for tcp, ov, r in rows:
        ms = r["ms"]
        print(f"  {tcp:8} {ov:8} {ms['step']:8.2f} {ms['grad_allreduce_total']:10.2f} {ms['grad_allreduce_exposed']:8.2f} {100 * ms['grad_allreduce_exposed'] / ms['step']:8.1f}%")
print(f"\nfiles: {out}")
PY
for rate in "${rates[@]}"; do
    "$bin" plot "$OUT_DIR/allreduce-$rate.json" -o "$OUT_DIR/busbw-$rate.png" \
        --title "2 simulated hosts x 1 rank, link $rate; #2: TCP eager limit 512 KiB" >&2
done
