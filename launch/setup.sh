#!/usr/bin/env bash
# Installs what ringtrain needs to build and run, when it is missing:
#   OpenMPI (libopenmpi-dev, openmpi-bin), libclang-dev (bindgen), pkg-config
#   and g++ (the kernel emulator, crates/kernel-emu) from Debian's apt
#   repositories, and checks for Rust >= 1.85 (cargo).
# Quiet and idempotent: when everything is present it prints nothing and
# installs nothing (apt-get update runs only if something must be installed).
# Works as root, or as a user with sudo when something must be installed.
#
# Run it directly (`bash launch/setup.sh`), or source it from another script
# to also get the environment it sets up: cargo on PATH and, as root, the
# OMPI_ALLOW_RUN_AS_ROOT* variables that let mpirun start.
set -euo pipefail

# --help when run directly (never when sourced: the sourcing script's
# arguments are not ours).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case "${1:-}" in
    -h | --help)
        echo "Usage: bash launch/setup.sh   (or: source launch/setup.sh)"
        echo
        sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p}' "$0"
        exit 0
        ;;
    esac
fi

RINGTRAIN_MIN_RUST="1.85"

setup_die() {
    echo "setup: error: $*" >&2
    exit 1
}

# Runs a command as root: directly when root, else through sudo.
setup_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        setup_die "need root (or sudo) to run: $*"
    fi
}

# True when the Debian package $1 is installed.
setup_have_pkg() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

# apt-get update (once), then apt-get install of the packages given; the
# output goes to a log that is shown only when something fails.
setup_apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: apt-get not found; install these packages by hand: $*" >&2
        return 1
    fi
    if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
        echo "setup: not root and no sudo: cannot install $* (ask an administrator)" >&2
        return 1
    fi
    local log
    log="$(mktemp "${TMPDIR:-/tmp}/ringtrain-setup.XXXXXX")"
    echo "setup: installing $* (apt-get)..." >&2
    if [ -z "${SETUP_APT_UPDATED:-}" ]; then
        if ! setup_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$log" 2>&1; then
            cat "$log" >&2
            rm -f "$log"
            setup_die "apt-get update failed"
        fi
        SETUP_APT_UPDATED=1
    fi
    if ! setup_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

# "1.95.0" >= "1.85"?
setup_version_ge() {
    local have="$1" want="$2"
    local hmaj hmin wmaj wmin
    hmaj="${have%%.*}"
    hmin="${have#*.}"
    hmin="${hmin%%.*}"
    wmaj="${want%%.*}"
    wmin="${want#*.}"
    wmin="${wmin%%.*}"
    [ "$hmaj" -gt "$wmaj" ] || { [ "$hmaj" -eq "$wmaj" ] && [ "$hmin" -ge "$wmin" ]; }
}

setup_rust_version() {
    local out
    out="$(rustc --version 2>/dev/null || true)"
    sed -n 's/^rustc \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' <<<"$out"
}

setup_main() {
    # 1. System packages.
    local missing=()
    if command -v dpkg-query >/dev/null 2>&1; then
        local p
        for p in libopenmpi-dev openmpi-bin libclang-dev pkg-config g++; do
            setup_have_pkg "$p" || missing+=("$p")
        done
    fi
    # Also catch an installed package whose commands are not on PATH.
    if ! command -v mpirun >/dev/null 2>&1 || ! command -v mpicc >/dev/null 2>&1; then
        [[ " ${missing[*]} " == *" openmpi-bin "* ]] || missing+=(openmpi-bin)
        [[ " ${missing[*]} " == *" libopenmpi-dev "* ]] || missing+=(libopenmpi-dev)
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        setup_apt_install "${missing[@]}" || setup_die "could not install ${missing[*]}"
        command -v mpirun >/dev/null 2>&1 || setup_die "mpirun still not found after installing openmpi-bin"
    fi

    # 2. Rust. rustup installs into ~/.cargo/bin, which a non-login shell
    #    may not have on PATH.
    if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
        export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "setup: cargo not found; trying Debian's cargo and rustc" >&2
        setup_apt_install cargo rustc || true
    fi
    local rust_help="install Rust >= $RINGTRAIN_MIN_RUST with rustup: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y, then open a new shell (or run: . \"\$HOME/.cargo/env\")"
    command -v cargo >/dev/null 2>&1 || setup_die "cargo not found; $rust_help"
    local v
    v="$(setup_rust_version)"
    [ -n "$v" ] || setup_die "rustc not found or not working; $rust_help"
    setup_version_ge "$v" "$RINGTRAIN_MIN_RUST" ||
        setup_die "rustc $v is too old (ringtrain needs >= $RINGTRAIN_MIN_RUST); $rust_help"

    # 3. OpenMPI refuses to start as root unless told it may.
    if [ "$(id -u)" -eq 0 ]; then
        export OMPI_ALLOW_RUN_AS_ROOT=1
        export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    fi
}

setup_main
