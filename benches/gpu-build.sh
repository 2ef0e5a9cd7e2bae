#!/usr/bin/env bash
# Builds what benches/gpu.sh runs on the lent GPU machine (which has no
# Rust toolchain and maybe no MPI), HERE, into target/gpu-carry/:
#   ringtrain            the binary, built without MPI (--no-default-features)
#   tests/NAME           the GPU test executables (tests/nccl.rs, tests/gpu.rs)
#   MANIFEST             one line per file: kind, path, source, sha256
# Binaries are stripped to stay under the device tool's 64 MiB carry limit.
# Usage: benches/gpu-build.sh      then carry target/gpu-carry to the device
#   and run benches/gpu.sh there.
# Environment: GPU_TESTS (default "nccl gpu nvrtc"): integration test targets to carry.
set -euo pipefail

case "${1:-}" in
-h | --help)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
"") ;;
*)
    echo "gpu-build.sh: no arguments expected (see --help)" >&2
    exit 2
    ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
for tool in cargo python3 strip; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "gpu-build.sh: $tool is needed" >&2
        exit 2
    }
done
# A target directory of its own: the build without MPI must not replace
# target/release (the MPI build the CPU tests use).
build_dir="$ROOT/target/gpu-build"
carry="$ROOT/target/gpu-carry"
tests="${GPU_TESTS:-nccl gpu nvrtc}"

json="$(mktemp)"
trap 'rm -f "$json"' EXIT
cargo build --release --no-default-features --target-dir "$build_dir" --bin ringtrain >&2
cargo test --release --no-default-features --target-dir "$build_dir" --no-run \
    --message-format=json >"$json"

rm -rf "$carry"
mkdir -p "$carry/tests"
cp "$build_dir/release/ringtrain" "$carry/ringtrain"
# Test executables: cargo's compiler-artifact messages of kind "test" with
# an executable; only the integration tests named in $tests.
python3 - "$json" "$carry" "$tests" <<'PY'
import json, shutil, sys
path, carry, wanted = sys.argv[1], sys.argv[2], sys.argv[3].split()
found = {}
for line in open(path):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    if "test" in t["kind"] and t["name"] in wanted:
        found[t["name"]] = (m["executable"], t["src_path"])
for name in wanted:
    if name not in found:
        print(f"gpu-build.sh: no test target {name!r} (skipped)", file=sys.stderr)
        continue
    exe, src = found[name]
    shutil.copy2(exe, f"{carry}/tests/{name}")
    with open(f"{carry}/sources", "a") as f:
        f.write(f"tests/{name} {src}\n")
PY
touch "$carry/sources"
strip "$carry/ringtrain" "$carry"/tests/* 2>/dev/null || strip "$carry/ringtrain"
{
    echo "# target/gpu-carry, built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty')"
    # The newest glibc symbol version the binaries need: the device's image
    # must have that glibc or newer (gpu.sh prints the one it has).
    glibc="$(objdump -T "$carry/ringtrain" "$carry"/tests/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)"
    echo "# needs ${glibc:-GLIBC_? (objdump not found)} or newer"
    echo "# kind path source sha256"
    echo "bin ringtrain src/main.rs $(sha256sum "$carry/ringtrain" | cut -d' ' -f1)"
    while read -r file src; do
        [ -n "$file" ] || continue
        echo "test $file ${src#"$ROOT"/} $(sha256sum "$carry/$file" | cut -d' ' -f1)"
    done <"$carry/sources"
} >"$carry/MANIFEST"
rm -f "$carry/sources"
cat "$carry/MANIFEST"
du -sh "$carry" | sed 's/^/gpu-build.sh: carry size /'
