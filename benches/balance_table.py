"""The README table of benches/balance.sh from its JSON lines.

Usage: balance_table.py BALANCE.jsonl [QUOTA_CPUS PERIOD_US EQUAL_CPUS]
Medians over the rounds (range in brackets); auto's partition is that of
the run with the median step / ideal, with how many times the partition
changed and after which step it last did. The floor: even with equal
quotas (runs marked "equal"), what synchronous steps cost beyond the
ideal when nothing is unbalanced (the all-reduce, per-step jitter).
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


def changes(b):
    if b.get("last_change_step") is None:
        return ""
    return f" ({b['changes']}, {b['last_change_step'] + 1})"


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    cpus = sys.argv[2] if len(sys.argv) > 2 else ""
    period = sys.argv[3] if len(sys.argv) > 3 else "0"
    equal = "/".join(sys.argv[4].split()) if len(sys.argv) > 4 else ""
    print("| setup (rank 2 2× slower) | even: step / ideal | auto: step / ideal "
          "| auto step / even step | auto's partition (changes, last after step) "
          f"| floor: even, equal quotas {equal} |")
    print("|---|---|---|---|---|---|")
    for setup in dict.fromkeys(r["setup"] for r in rows):
        by = {m: [r for r in rows if r["setup"] == setup and r["balance"]["mode"] == m
                  and not r.get("equal")] for m in ("even", "auto")}
        floor = [r["balance"]["step_vs_ideal"] for r in rows
                 if r["setup"] == setup and r.get("equal")]
        if not by["even"] or not by["auto"]:
            continue
        ratio = {m: [r["balance"]["step_vs_ideal"] for r in rs] for m, rs in by.items()}
        step = {m: statistics.median(r["ms"]["step"] for r in rs) for m, rs in by.items()}
        auto = sorted(by["auto"], key=lambda r: r["balance"]["step_vs_ideal"])
        mid = auto[(len(auto) - 1) // 2]["balance"]
        print(f"| {describe(setup, cpus, period)} | {fmt(ratio['even'])} | {fmt(ratio['auto'])} "
              f"| {step['auto'] / step['even']:.2f} | {'/'.join(map(str, mid['partition']))}"
              f"{changes(mid)} | {fmt(floor) if floor else '—'} |")
    print()
    for setup in dict.fromkeys(r["setup"] for r in rows):
        print(f"{setup}: bench train {next(r['args'] for r in rows if r['setup'] == setup)}")
        for r in rows:
            if r["setup"] == setup:
                b = r["balance"]
                rates = "/".join(f"{x:.0f}" for x in b["compute_samples_per_s"])
                mode = "even, equal quotas" if r.get("equal") else b["mode"]
                print(f"  round {r['round']} {mode}: step {r['ms']['step']:.1f} ms, "
                      f"ideal {b['ideal_ms']:.1f} ms, {b['step_vs_ideal']:.2f}× | partition "
                      f"{'/'.join(map(str, b['partition']))}{changes(b)} | samples/s per rank {rates}")


if __name__ == "__main__":
    main()
