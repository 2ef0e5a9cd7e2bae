#!/usr/bin/env bash
# All-reduce and training across 2 simulated hosts (launch/sim-cluster.sh),
# 1 rank per host, at several link rates; every figure beside its baseline
# from the same run:
#   1. bench allreduce: ring vs MPI_Allreduce over TCP, f32 vs --wire bf16,
#      each with OpenMPI's TCP defaults and with the TCP eager limit raised
#      to the ring's chunk (no rendezvous handshake per chunk); busbw
#      against the link's bound, the alpha-beta model fitted per link;
#   2. bench train --hidden 1024,1024 at the first rate: overlap on vs off.
# Usage: benches/cluster.sh [--quick]   (needs root: network namespaces)
# Environment: RATES (default "1gbit 10gbit none"), OUT_DIR (JSON, PNG,
# summary.txt; default a fresh temporary directory).
set -euo pipefail

case "${1:-}" in
-h | --help)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
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

sizes=(-b 1M -e 64M -f 4 -n 5 -w 2)
[ $quick = 1 ] && sizes=(-b 1M -e 16M -f 4 -n 3 -w 1)
train_iters=(--iters 20 --warmup 3)
[ $quick = 1 ] && train_iters=(--iters 5 --warmup 1)
# The ring's chunk is 256 KiB (src/comm/ring.rs); OpenMPI's TCP eager
# limit is 64 KiB, above which every message waits for a handshake.
eager=(--mca btl_tcp_eager_limit 524288 --mca btl_tcp_rndv_eager_limit 524288
    --mca btl_tcp_max_send_size 524288)

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
    json="$OUT_DIR/allreduce-$rate.json"
    : >"$json"
    for tcp in default eager; do
        mca=()
        [ "$tcp" = default ] || mca=("${eager[@]}")
        for cfg in "ring f32" "ring bf16" "mpi f32"; do
            read -r comm wire <<<"$cfg"
            echo "cluster.sh: link $rate, tcp $tcp: bench allreduce --comm $comm --wire $wire" >&2
            "$SIM" --prefix "$prefix" mpirun -np 2 --map-by node "${mca[@]}" \
                "$bin" bench allreduce "${sizes[@]}" --comm "$comm" --wire "$wire" --json \
                >"$OUT_DIR/allreduce-$rate-$comm-$wire-$tcp.json"
            # One file per link for the plot; "#2" marks the eager runs.
            cat "$OUT_DIR/allreduce-$rate-$comm-$wire-$tcp.json" >>"$json"
        done
    done
    "$bin" plot "$json" -o "$OUT_DIR/busbw-$rate.png" \
        --title "busbw, 2 simulated hosts x 1 rank, link $rate (#2: TCP eager limit 512 KiB)" >&2
    if [ "$rate" = "${rates[0]}" ]; then
        for tcp in default eager; do
            mca=()
            [ "$tcp" = default ] || mca=("${eager[@]}")
            for ov in on off; do
                flag=()
                [ "$ov" = on ] || flag=(--no-overlap)
                echo "cluster.sh: link $rate, tcp $tcp: bench train --hidden 1024,1024, overlap $ov" >&2
                "$SIM" --prefix "$prefix" mpirun -np 2 --map-by node "${mca[@]}" \
                    "$bin" bench train --hidden 1024,1024 "${train_iters[@]}" "${flag[@]}" --json \
                    >"$OUT_DIR/train-$rate-$tcp-overlap-$ov.json"
            done
        done
    fi
    "$SIM" --prefix "$prefix" down >/dev/null
    prefix=""
done

python3 - "$OUT_DIR" "${rates[@]}" <<'PY' | tee "$OUT_DIR/summary.txt"
import json, os, sys

out, rates = sys.argv[1], sys.argv[2:]

def load(path):
    with open(path) as f:
        return json.load(f)

def bound(rate):  # the link's bytes per second, None when unlimited
    units = {"gbit": 1e9, "mbit": 1e6, "kbit": 1e3}
    for u, m in units.items():
        if rate.endswith(u):
            return float(rate[: -len(u)]) * m / 8
    return None

print("2 simulated hosts x 1 rank; busbw in GB/s (out-of-place, of the f32 message size);")
print("% = busbw on the wire (bf16: half the bytes) / link rate")
for rate in rates:
    b = bound(rate)
    print(f"\nlink {rate}" + (f" (bound {b / 1e9:.4f} GB/s)" if b else " (no limit)"))
    for tcp in ("default", "eager"):
        runs = {}
        for comm, wire in (("ring", "f32"), ("ring", "bf16"), ("mpi", "f32")):
            p = os.path.join(out, f"allreduce-{rate}-{comm}-{wire}-{tcp}.json")
            if os.path.exists(p):
                runs[(comm, wire)] = load(p)
        if not runs:
            continue
        print(f"  tcp {tcp}:")
        for (comm, wire), r in runs.items():
            m = r.get("model") or {}
            if m:
                print(f"    {comm} {wire}: alpha {m.get('alpha_us', 0):.1f} us, beta {m.get('beta_gbps', 0):.4f} GB/s")
        print("    size(B)     ring f32          ring bf16         mpi f32           bf16/f32 time  ring/mpi time")
        f32 = runs.get(("ring", "f32"))
        if not f32:
            continue
        for i, row in enumerate(f32["rows"]):
            cells, t = [], {}
            for key in (("ring", "f32"), ("ring", "bf16"), ("mpi", "f32")):
                r = runs.get(key)
                if not r or i >= len(r["rows"]):
                    cells.append(" " * 17)
                    continue
                o = r["rows"][i]["out_of_place"]
                t[key] = o["time_us"]
                # Against the link: the bytes on the wire (bf16: half).
                wire_bytes = 0.5 if key[1] == "bf16" else 1.0
                pct = f"{100 * o['busbw'] * wire_bytes * 1e9 / b:5.1f}%" if b else "      "
                cells.append(f"{o['busbw']:7.4f} {pct}   ")
            ratio_w = t[("ring", "bf16")] / t[("ring", "f32")] if ("ring", "bf16") in t else float("nan")
            ratio_m = t[("ring", "f32")] / t[("mpi", "f32")] if ("mpi", "f32") in t else float("nan")
            print(f"    {row['size']:>9}   {''.join(cells)}{ratio_w:8.3f}      {ratio_m:8.3f}")

first = rates[0]
rows = []
for tcp in ("default", "eager"):
    for ov in ("on", "off"):
        p = os.path.join(out, f"train-{first}-{tcp}-overlap-{ov}.json")
        if os.path.exists(p):
            rows.append((tcp, ov, load(p)))
if rows:
    print(f"\nbench train --hidden 1024,1024 at link {first} (ms per step, means over the timed iterations)")
    print("  tcp      overlap  step     all-reduce  exposed  exposed share")
    for tcp, ov, r in rows:
        ms = r["ms"]
        print(f"  {tcp:8} {ov:8} {ms['step']:8.2f} {ms['grad_allreduce_total']:10.2f} {ms['grad_allreduce_exposed']:8.2f} {100 * ms['grad_allreduce_exposed'] / ms['step']:8.1f}%")
print(f"\nfiles: {out}")
PY
