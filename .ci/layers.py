#!/usr/bin/env python3
"""The module layers of src/: every `crate::` path must point to a module in
the same layer or one below. Fails (exit 1) on an upward import, on a cycle
between top-level modules, and on a top-level module missing from LAYERS.

Run: python3 .ci/layers.py [--graph]   (from the repository root; .ci/run
runs it). --graph prints every edge with the files that make it.
"""
import re
import sys
from collections import defaultdict
from pathlib import Path

# Bottom to top. A module may use modules of its own layer or lower ones;
# within one layer the edges must still form no cycle.
LAYERS = [
    # Leaves: no ringtrain module below them but these.
    ["error", "rng", "digest", "fsutil", "tasks", "spec", "fault", "stderr", "startup_guard"],
    # Self-contained services over the leaves.
    ["data", "metrics", "rendezvous", "plot"],
    # Who the ranks are (MPI or the launcher's environment).
    ["world"],
    # Collectives between ranks.
    ["comm"],
    # Where and how a step's math runs; the model on top of it.
    ["backend"],
    ["model", "config"],
    # Averaging gradients over ranks: buckets, threads, streams.
    ["gradsync"],
    # The side channel that names a stuck or dead rank.
    ["watchdog"],
    # Files of a run: checkpoints, traces.
    ["checkpoint", "trace"],
    # The training step.
    ["train"],
    # What rank 0 prints and writes.
    ["report"],
    # Commands.
    ["cli"],
    ["app", "bench"],
    ["main"],
]

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def strip(text):
    """The source with comments, strings and char literals blanked out."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c in "rb" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")) and re.match(r"b?r#*\"", text[i:]):
            m = re.match(r"b?r(#*)\"", text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            i = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'":
            if text.startswith("\\", i + 1):
                j = text.find("'", i + 2)
                i = n if j < 0 else j + 1
            elif i + 2 < n and text[i + 2] == "'":
                i += 3
            else:
                out.append(c)  # a lifetime
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def names_in_group(text, i):
    """Top-level names of the `{...}` group that opens at text[i]."""
    depth, names, want = 0, [], True
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
            want = depth == 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                break
        elif c == "," and depth == 1:
            want = True
        elif want and depth == 1 and (c.isalpha() or c == "_"):
            m = re.match(r"\w+", text[i:])
            names.append(m.group(0))
            i += len(m.group(0)) - 1
            want = False
        i += 1
    return names


def top_module(path):
    rel = path.relative_to(SRC)
    if rel.parts == ("main.rs",):
        return "main"
    if rel.parts == ("lib.rs",):
        return None
    return rel.parts[0].removesuffix(".rs")


def edges():
    found = defaultdict(set)  # (from, to) -> files
    for path in sorted(SRC.rglob("*.rs")):
        me = top_module(path)
        if me is None:
            continue
        text = strip(path.read_text())
        prefix = "ringtrain" if me == "main" else "crate"
        for m in re.finditer(prefix + r"::(\w+|\{)", text):
            targets = names_in_group(text, m.end() - 1) if m.group(1) == "{" else [m.group(1)]
            for t in targets:
                if t not in ("self", "super") and t != me:
                    found[(me, t)].add(str(path.relative_to(ROOT)))
    return found


def main():
    layer_of = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    found = edges()
    if "--graph" in sys.argv:
        for (a, b), files in sorted(found.items()):
            print(f"{a} -> {b}   ({', '.join(sorted(files))})")
    errors = []
    mods = {top_module(p) for p in SRC.rglob("*.rs")} - {None}
    for m in sorted(mods - set(layer_of)):
        errors.append(f"src/{m}: not in LAYERS of .ci/layers.py; add it to the layer it belongs to")
    for (a, b), files in sorted(found.items()):
        if a in layer_of and b in layer_of and layer_of[b] > layer_of[a]:
            errors.append(
                f"{a} (layer {layer_of[a]}) imports {b} (layer {layer_of[b]}, above it) in "
                + ", ".join(sorted(files))
            )
    # Cycles (also within one layer): depth-first search over the edges.
    graph = defaultdict(set)
    for a, b in found:
        graph[a].add(b)
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for k in sorted(graph[n]):
            if state.get(k) == 1:
                cyc = stack[stack.index(k):] + [k]
                errors.append("cycle: " + " -> ".join(cyc))
            elif k not in state:
                visit(k)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    for e in errors:
        print("layers: " + e, file=sys.stderr)
    if errors:
        print(f"layers: {len(errors)} problem(s); see docs/ARCHITECTURE.md, 'Layers'", file=sys.stderr)
        return 1
    print(f"layers: {len(mods)} top-level modules in {len(LAYERS)} layers, every import points down, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
