"""The README table of benches/balance.sh from its JSON lines.

Usage: balance_table.py BALANCE.jsonl [QUOTA_CPUS PERIOD_US]
Medians over the rounds (range in brackets); auto's partition is that of
the run with the median step / ideal.
"""

import json
import statistics
import sys


def describe(setup, cpus, period):
    if setup == "quota":
        c = "/".join(cpus.split())
        return f"quota: CPUs {c} per {int(period) // 1000} ms (real compute)"
    if setup == "sleep":
        return "sleep: `slow@2:2:8` (compute stretched, mostly sleeping)"
    return setup


def fmt(xs):
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    cpus = sys.argv[2] if len(sys.argv) > 2 else ""
    period = sys.argv[3] if len(sys.argv) > 3 else "0"
    print("| setup (rank 2 2× slower) | even: step / ideal | auto: step / ideal "
          "| auto step / even step | auto's partition |")
    print("|---|---|---|---|---|")
    for setup in dict.fromkeys(r["setup"] for r in rows):
        by = {m: [r for r in rows if r["setup"] == setup and r["balance"]["mode"] == m]
              for m in ("even", "auto")}
        if not by["even"] or not by["auto"]:
            continue
        ratio = {m: [r["balance"]["step_vs_ideal"] for r in rs] for m, rs in by.items()}
        step = {m: statistics.median(r["ms"]["step"] for r in rs) for m, rs in by.items()}
        auto = sorted(by["auto"], key=lambda r: r["balance"]["step_vs_ideal"])
        mid = auto[(len(auto) - 1) // 2]["balance"]["partition"]
        print(f"| {describe(setup, cpus, period)} | {fmt(ratio['even'])} | {fmt(ratio['auto'])} "
              f"| {step['auto'] / step['even']:.2f} | {'/'.join(map(str, mid))} |")
    print()
    for setup in dict.fromkeys(r["setup"] for r in rows):
        print(f"{setup}: bench train {next(r['args'] for r in rows if r['setup'] == setup)}")
        for r in rows:
            if r["setup"] == setup:
                b = r["balance"]
                rates = "/".join(f"{x:.0f}" for x in b["compute_samples_per_s"])
                print(f"  round {r['round']} {b['mode']:4}: step {r['ms']['step']:.1f} ms, "
                      f"ideal {b['ideal_ms']:.1f} ms, {b['step_vs_ideal']:.2f}× | partition "
                      f"{'/'.join(map(str, b['partition']))} | samples/s per rank {rates}")


if __name__ == "__main__":
    main()
