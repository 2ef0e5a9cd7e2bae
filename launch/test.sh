#!/usr/bin/env bash
# Installs what is missing (launch/setup.sh), then runs the whole test suite
# in release mode (all test binaries, even after a failure). Extra
# arguments go to `cargo test`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    cat <<USAGE
Usage: launch/test.sh [CARGO-TEST-ARGS...]

Installs missing system packages (launch/setup.sh), then runs

    cargo test --release --no-fail-fast [CARGO-TEST-ARGS...]

in the repository root: unit tests, and integration tests that run the real
binary under \`mpirun -np N\`. Exits with the status of cargo test.

Examples:
  launch/test.sh                      # everything
  launch/test.sh --test bad_input     # one integration test file
  launch/test.sh -- --nocapture       # show test output
USAGE
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
esac

# shellcheck source=launch/setup.sh
source "$ROOT/launch/setup.sh"

cd "$ROOT"
exec cargo test --release --no-fail-fast "$@"
