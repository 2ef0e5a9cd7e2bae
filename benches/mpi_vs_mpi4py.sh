#!/usr/bin/env bash
# 2-rank all-reduce busbw (GB/s), interleaved rounds, medians: an older
# ringtrain's --comm mpi (OLD_BIN, optional), this one's --comm mpi
# (MPI_IN_PLACE), mpi4py's MPI_Allreduce on the same Open MPI, the ring over
# MPI messages (RINGTRAIN_RING_SHM=off) and the ring as it runs by default
# (over shared memory on one host), with the ring over mpi4py and over its
# shared-memory bound (same run). Both ring runs also time MPI_Allreduce
# after each of their rows (--vs-mpi): the last columns are MPI time / ring
# time from those same-run pairs, which the machine's swings between runs
# do not bias.
# Usage: OLD_BIN=target/base-ringtrain benches/mpi_vs_mpi4py.sh [REPEAT]
# Needs target/py (python3 -m venv target/py && target/py/bin/pip install mpi4py numpy).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repeat=${1:-3}
bin="$ROOT/target/release/ringtrain"
py="$ROOT/target/py/bin/python"
m=(mpirun -np 2)
[ "$(id -u)" = 0 ] && m+=(--allow-run-as-root)
out=$(mktemp -d)
ar=(bench allreduce -b 1M -e 64M -f 4 -n 100 --json)
for r in $(seq "$repeat"); do
    [ -n "${OLD_BIN:-}" ] && "${m[@]}" "$OLD_BIN" "${ar[@]}" --comm mpi >"$out/old.$r"
    "${m[@]}" "$bin" "${ar[@]}" --comm mpi >"$out/mpi.$r"
    "${m[@]}" "$py" "$ROOT/benches/mpi4py_allreduce.py" 1M 64M 4 100 >"$out/py.$r"
    "${m[@]}" -x RINGTRAIN_RING_SHM=off "$bin" "${ar[@]}" --comm ring --vs-mpi >"$out/ringmpi.$r"
    "${m[@]}" "$bin" "${ar[@]}" --comm ring --vs-mpi >"$out/ring.$r"
done
python3 - "$out" "$repeat" <<'PY'
import json, os, statistics as st, sys
d, n = sys.argv[1], int(sys.argv[2])
def rows(name, r):
    p = f"{d}/{name}.{r}"
    if not os.path.exists(p):
        return None
    t = open(p).read().strip().splitlines()
    if name == "py":
        return {x["size"]: x for x in map(json.loads, t)}
    return {x["size"]: x for x in json.loads(t[-1])["rows"]}
names = [x for x in ("old", "mpi", "py", "ringmpi", "ring") if rows(x, 1)]
label = {"old": "mpi (scratch+copy)", "mpi": "mpi (IN_PLACE)", "py": "mpi4py",
         "ringmpi": "ring over MPI msgs", "ring": "ring (shm)"}
print(f"2 ranks, busbw GB/s, medians of {n} interleaved rounds; in-place / out-of-place")
print(f"{'size':>10} " + " ".join(f"{label[x]:>22}" for x in names)
      + f" {'ring / mpi4py':>15} {'shm bound':>10} {'ring / bound':>14}"
      + f" {'same run: MPI/ring msgs':>24} {'MPI/ring shm':>14}")
for size in sorted(rows(names[0], 1)):
    cells = []
    for x in names:
        ip = st.median(rows(x, r)[size]["in_place"]["busbw"] for r in range(1, n + 1))
        oop = st.median(rows(x, r)[size]["out_of_place"]["busbw"] for r in range(1, n + 1))
        cells.append(f"{ip:10.2f} / {oop:9.2f}")
    med = lambda x, k: st.median(rows(x, r)[size][k]["busbw"] for r in range(1, n + 1))
    # In-place / out-of-place ratios, and the ring's shared-memory bound
    # (bench allreduce measures it in the same run).
    ratio = f"{med('ring', 'in_place') / med('py', 'in_place'):.2f} / {med('ring', 'out_of_place') / med('py', 'out_of_place'):.2f}"
    bound = st.median(rows("ring", r)[size]["shm_bound_busbw"] for r in range(1, n + 1))
    vs = f"{med('ring', 'in_place') / bound:.2f} / {med('ring', 'out_of_place') / bound:.2f}"
    # MPI time / ring time of rows measured side by side (--vs-mpi).
    def same(x):
        ip = st.median(rows(x, r)[size]["mpi"]["in_place"]["time_us"] / rows(x, r)[size]["in_place"]["time_us"] for r in range(1, n + 1))
        oop = st.median(rows(x, r)[size]["mpi"]["out_of_place"]["time_us"] / rows(x, r)[size]["out_of_place"]["time_us"] for r in range(1, n + 1))
        return f"{ip:.2f} / {oop:.2f}"
    print(f"{size:>10} " + " ".join(f"{c:>22}" for c in cells) + f" {ratio:>15} {bound:10.2f} {vs:>14}"
          + f" {same('ringmpi'):>24} {same('ring'):>14}")
PY
