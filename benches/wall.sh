#!/usr/bin/env bash
# Wall time of `ringtrain train --steps 1000` (default model) against the
# time its steps took (data + compute + exposed communication, from the
# run's own summary) and against 1000 x the step of a `bench train` run at
# the same batch per rank. Binaries given as arguments are run alternately
# (A/B on this VM, whose speed swings between runs).
# Usage: NP=1|2 R=5 benches/wall.sh [BIN...]   (default: target/release/ringtrain)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NP=${NP:-1}
R=${R:-5}
[ $# -gt 0 ] || set -- "$ROOT/target/release/ringtrain"
launch=()
if [ "$NP" -gt 1 ]; then
    launch=(mpirun -np "$NP")
    [ "$(id -u)" = 0 ] && launch+=(--allow-run-as-root)
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq "$R"); do
    for b in "$@"; do
        "${launch[@]}" "$b" train --steps 1000 >"$out" 2>&1
        sps=$("${launch[@]}" "$b" bench train --iters 300 --batch-per-rank $((256 / NP)) --json 2>/dev/null |
            python3 -c "import json,sys; print(json.load(sys.stdin)['samples_per_s_per_rank'])")
        python3 - "$b" "$NP" "$sps" "$out" <<'PY'
import re, sys
b, np, sps, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
t = open(path).read()
wall = float(re.search(r"1000 steps in ([0-9.]+) s wall", t).group(1))
part = lambda k: float(re.search(k + r" ([0-9.]+) s", t).group(1))
steps = part("data") + part("compute") + part("exposed communication")
bench = 1000 * (256 // np) / sps
print(f"{b} np{np}: wall {wall:.2f} s | start-up {part('start-up'):.2f} eval {part('evaluation'):.2f} | "
      f"in steps {steps:.2f} s -> {wall / steps:.3f}x | 1000 bench steps {bench:.2f} s -> {wall / bench:.2f}x")
PY
    done
done
