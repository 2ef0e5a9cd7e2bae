#!/usr/bin/env bash
# A simulated cluster on this machine: N hosts as Linux network namespaces,
# each with its own hostname and address, joined through veth pairs to a
# bridge, every host link rate-limited with tc. Nothing touches the root
# namespace's interfaces or routes: the bridge lives in a namespace of its
# own, and no traffic leaves the machine.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/launch/sim-cluster.sh"
STATE_ROOT="${SIM_STATE_DIR:-/run/ringtrain-sim}"
SUBNET="10.77.0"
# Exit codes: 2 bad usage, 3 no privileges (CAP_NET_ADMIN, namespaces).
EXIT_USAGE=2
EXIT_NOPRIV=3

usage() {
    cat <<USAGE
Usage: launch/sim-cluster.sh [--prefix P] COMMAND [ARGS...]

Commands:
  up N [--link RATE] [--slots K]
                    create N simulated hosts (N >= 1) named P-h0 .. P-h(N-1),
                    addresses $SUBNET.1 .. $SUBNET.N/24, each with its own
                    network and UTS namespace (hostname); every host link
                    rate-limited in both directions with tc tbf at RATE
                    (tc syntax: 1gbit, 10gbit, 500mbit; "none" or absent:
                    unlimited). K slots per host in the hostfile (default:
                    the cores, nproc). Prints "SIM_PREFIX=P" on stdout.
  down              kill every process on the hosts, remove every namespace,
                    link and file this run created
  exec HOST CMD...  run CMD on HOST (P-hI, or just its index I), in its
                    network namespace, with its hostname and an /etc/hosts
                    that names every simulated host
  mpirun ARGS...    mpirun across the hosts that are up, started on host 0:
                    the hostfile and OpenMPI's rsh launcher agent (a script
                    that enters a host's namespaces, no sshd) filled in,
                    TCP between hosts, shared memory within one
  status            the clusters up; for one: hosts, addresses, link rate,
                    processes per host
  hostfile | agent  print the path of the hostfile / the launcher agent
  hosts             print the host names, one per line

The run is chosen by --prefix P, else \$SIM_PREFIX, else the only cluster
up (\`up\` makes a fresh prefix when none is given: two runs never collide).
State lives in $STATE_ROOT/P (SIM_STATE_DIR overrides the parent).
If \`up\` fails half way, what it created is removed again.

Exit codes: 0 ok, $EXIT_USAGE bad usage, $EXIT_NOPRIV no privileges (network namespaces
need root or CAP_NET_ADMIN + CAP_SYS_ADMIN; tests report themselves skipped),
else the command's own status (exec, mpirun) or 1.

Examples:
  eval "\$(launch/sim-cluster.sh up 2 --link 1gbit)"   # sets SIM_PREFIX
  launch/sim-cluster.sh exec 1 hostname
  launch/sim-cluster.sh mpirun -np 4 target/release/ringtrain info
  launch/sim-cluster.sh down
USAGE
}

die() {
    echo "sim-cluster: $*" >&2
    exit 1
}

usage_die() {
    echo "sim-cluster: $* (see --help)" >&2
    exit "$EXIT_USAGE"
}

# ---------------------------------------------------------------- helpers

# Can we make network namespaces? (root, or CAP_NET_ADMIN + CAP_SYS_ADMIN)
check_privileges() {
    local probe="rtprobe$$"
    if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1 ||
        ! command -v unshare >/dev/null 2>&1; then
        echo "sim-cluster: no privileges: ip, tc or unshare missing (iproute2, util-linux)" >&2
        exit "$EXIT_NOPRIV"
    fi
    if ! ip netns add "$probe" 2>/dev/null; then
        echo "sim-cluster: no privileges: cannot create a network namespace (needs root or CAP_NET_ADMIN + CAP_SYS_ADMIN)" >&2
        exit "$EXIT_NOPRIV"
    fi
    local ok=1
    ip netns exec "$probe" unshare --uts true 2>/dev/null || ok=0
    ip netns del "$probe" 2>/dev/null || true
    if [ "$ok" -eq 0 ]; then
        echo "sim-cluster: no privileges: cannot create a UTS namespace" >&2
        exit "$EXIT_NOPRIV"
    fi
}

# The prefix of the run to act on (sets PREFIX and STATE).
pick_prefix() {
    if [ -z "$PREFIX" ]; then
        PREFIX="${SIM_PREFIX:-}"
    fi
    if [ -z "$PREFIX" ]; then
        local up=()
        if [ -d "$STATE_ROOT" ]; then
            local d
            for d in "$STATE_ROOT"/*/; do
                [ -f "$d/hosts" ] && up+=("$(basename "$d")")
            done
        fi
        case "${#up[@]}" in
        0) die "no simulated cluster is up (launch/sim-cluster.sh up N)" ;;
        1) PREFIX="${up[0]}" ;;
        *) usage_die "several clusters are up (${up[*]}): choose one with --prefix or SIM_PREFIX" ;;
        esac
    fi
    valid_prefix "$PREFIX"
    STATE="$STATE_ROOT/$PREFIX"
}

valid_prefix() {
    [[ "$1" =~ ^[a-z][a-z0-9]{1,7}$ ]] ||
        usage_die "prefix '$1' must be 2-8 characters, a-z and 0-9, starting with a letter"
}

# HOST (a name or an index) -> the host's name; dies when it is not up.
host_name() {
    local h="$1"
    if [[ "$h" =~ ^[0-9]+$ ]]; then
        h="$PREFIX-h$h"
    fi
    grep -qxF "$h" "$STATE/hosts" 2>/dev/null ||
        usage_die "no host '$1' in cluster $PREFIX (hosts: $(tr '\n' ' ' <"$STATE/hosts"))"
    echo "$h"
}

# The rate's bytes per second (for tbf's burst), from tc's rate syntax.
rate_bytes() {
    local r="${1,,}" n unit
    n="${r%%[a-z]*}"
    unit="${r#"$n"}"
    [[ "$n" =~ ^[0-9]+$ ]] || return 1
    case "$unit" in
    bit) echo $((n / 8)) ;;
    kbit) echo $((n * 1000 / 8)) ;;
    mbit) echo $((n * 1000000 / 8)) ;;
    gbit) echo $((n * 1000000000 / 8)) ;;
    tbit) echo $((n * 1000000000000 / 8)) ;;
    bps) echo "$n" ;;
    kbps) echo $((n * 1000)) ;;
    mbps) echo $((n * 1000000)) ;;
    gbps) echo $((n * 1000000000)) ;;
    *) return 1 ;;
    esac
}

# tbf on the egress of DEV in namespace NS at RATE (both ends of a host
# link get one: the link is limited in both directions).
limit() {
    local ns="$1" dev="$2" rate="$3" bytes burst
    bytes="$(rate_bytes "$rate")"
    # The bucket: 1 ms of traffic at the rate (at least 64 KiB, one GSO
    # packet). Messages up to this size leave faster than the rate after
    # an idle link; a larger bucket would inflate small-message figures.
    burst=$((bytes / 1000))
    [ "$burst" -ge 65536 ] || burst=65536
    ip netns exec "$ns" tc qdisc replace dev "$dev" root tbf rate "$rate" burst "$burst" latency 50ms
}

# ---------------------------------------------------------------- up/down

cmd_up() {
    local n="" rate="none" slots=""
    while [ "$#" -gt 0 ]; do
        case "$1" in
        --link)
            [ "$#" -ge 2 ] || usage_die "--link needs a rate"
            rate="$2"
            shift 2
            ;;
        --link=*)
            rate="${1#--link=}"
            shift
            ;;
        --slots)
            [ "$#" -ge 2 ] || usage_die "--slots needs a number"
            slots="$2"
            shift 2
            ;;
        -*) usage_die "up: unknown option $1" ;;
        *)
            [ -z "$n" ] || usage_die "up: one host count, got '$n' and '$1'"
            n="$1"
            shift
            ;;
        esac
    done
    { [[ "$n" =~ ^[1-9][0-9]*$ ]] && [ "$n" -le 200 ]; } || usage_die "up: N must be a host count 1..200, got '${n}'"
    [ -n "$slots" ] || slots="$(nproc)"
    [[ "$slots" =~ ^[1-9][0-9]*$ ]] || usage_die "up: --slots must be a positive integer, got '$slots'"
    if [ "$rate" != none ]; then
        rate_bytes "$rate" >/dev/null || usage_die "up: --link '$rate' is not a rate (e.g. 1gbit, 10gbit, 500mbit, none)"
    fi
    check_privileges

    if [ -z "$PREFIX" ]; then
        local tries=0
        while :; do
            PREFIX="rt$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
            [ -e "$STATE_ROOT/$PREFIX" ] || ip netns list | grep -q "^$PREFIX-" || break
            tries=$((tries + 1))
            [ "$tries" -lt 20 ] || die "could not find a free prefix"
        done
    fi
    valid_prefix "$PREFIX"
    STATE="$STATE_ROOT/$PREFIX"
    [ ! -e "$STATE" ] || usage_die "a cluster with prefix $PREFIX is up already (down it first)"
    if ip netns list | grep -q "^$PREFIX-"; then
        usage_die "namespaces with prefix $PREFIX exist already"
    fi

    mkdir -p "$STATE"
    # From here on, a failure removes everything made so far.
    trap 'echo "sim-cluster: up failed; removing what it created" >&2; teardown' ERR
    trap 'teardown; exit 130' INT TERM
    echo "$rate" >"$STATE/link"
    : >"$STATE/hosts.partial"

    local br="$PREFIX-br"
    ip netns add "$br"
    echo "$br" >"$STATE/namespaces"
    ip netns exec "$br" ip link set lo up
    ip netns exec "$br" ip link add br0 type bridge
    ip netns exec "$br" ip link set br0 up

    local i h hosts_file="$STATE/etc-hosts"
    {
        echo "127.0.0.1 localhost"
        for ((i = 0; i < n; i++)); do
            echo "$SUBNET.$((i + 1)) $PREFIX-h$i"
        done
    } >"$hosts_file"
    : >"$STATE/hostfile"
    for ((i = 0; i < n; i++)); do
        h="$PREFIX-h$i"
        ip netns add "$h"
        echo "$h" >>"$STATE/namespaces"
        echo "$h" >>"$STATE/hosts.partial"
        # The host's end is eth0 in the host; the bridge's end is P-vI.
        ip link add eth0 netns "$h" type veth peer name "$PREFIX-v$i" netns "$br"
        ip netns exec "$br" ip link set "$PREFIX-v$i" master br0 up
        ip netns exec "$h" ip link set lo up
        ip netns exec "$h" ip addr add "$SUBNET.$((i + 1))/24" dev eth0
        ip netns exec "$h" ip link set eth0 up
        if [ "$rate" != none ]; then
            limit "$h" eth0 "$rate"
            limit "$br" "$PREFIX-v$i" "$rate"
        fi
        # `ip netns exec` bind-mounts these over /etc/hosts and /etc/hostname.
        mkdir -p "/etc/netns/$h"
        cp "$hosts_file" "/etc/netns/$h/hosts"
        echo "$h" >"/etc/netns/$h/hostname"
        echo "$h slots=$slots" >>"$STATE/hostfile"
        # Test hook: fail half way (tests check that nothing is left).
        if [ "${SIM_CLUSTER_FAIL_AT:-}" = "$i" ]; then
            echo "sim-cluster: SIM_CLUSTER_FAIL_AT=$i: failing on purpose" >&2
            false
        fi
    done
    write_agent
    mv "$STATE/hosts.partial" "$STATE/hosts"
    trap - ERR INT TERM
    echo "sim-cluster: up: $n host(s) $PREFIX-h0..$PREFIX-h$((n - 1)), $SUBNET.1..$SUBNET.$n, link ${rate}, $slots slot(s) each" >&2
    echo "SIM_PREFIX=$PREFIX"
}

# OpenMPI's rsh launcher calls AGENT HOST COMMAND-WORDS... (like ssh).
write_agent() {
    cat >"$STATE/agent" <<AGENT
#!/usr/bin/env bash
# OpenMPI launcher agent for simulated cluster $PREFIX: enters HOST's
# namespaces and runs the remaining words as a shell command, like ssh.
set -euo pipefail
host="\$1"
shift
exec "$SELF" --prefix "$PREFIX" exec "\$host" /bin/sh -c "\$*"
AGENT
    chmod +x "$STATE/agent"
}

# Kills every process in the namespaces, deletes them and the files.
teardown() {
    set +e
    trap - ERR
    local ns namespaces=()
    if [ -f "$STATE/namespaces" ]; then
        mapfile -t namespaces <"$STATE/namespaces"
    fi
    # Also anything with the prefix that the list missed.
    while read -r ns _; do
        [[ "$ns" == "$PREFIX-"* ]] || continue
        [[ " ${namespaces[*]} " == *" $ns "* ]] || namespaces+=("$ns")
    done < <(ip netns list 2>/dev/null)
    local pids
    for _ in 1 2 3 4 5; do
        pids=""
        for ns in "${namespaces[@]}"; do
            pids+=" $(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
        done
        [ -n "${pids// /}" ] || break
        # shellcheck disable=SC2086 # a list of pids
        kill -9 $pids 2>/dev/null
        sleep 0.2
    done
    for ns in "${namespaces[@]}"; do
        ip netns del "$ns" 2>/dev/null
        [[ "$ns" == "$PREFIX-h"* ]] && rm -rf "/etc/netns/${ns:?}"
    done
    rm -rf "${STATE:?}"
    set -e
}

cmd_down() {
    pick_prefix
    [ -d "$STATE" ] || ip netns list | grep -q "^$PREFIX-" || die "no cluster $PREFIX is up"
    teardown
    # What is left (should be nothing).
    local left
    left="$(ip netns list | grep "^$PREFIX-" || true)$(ip -o link show | grep -F "$PREFIX-" || true)"
    [ -z "$left" ] || die "down: left behind: $left"
    echo "sim-cluster: down: $PREFIX removed" >&2
}

# ---------------------------------------------------------------- exec/mpirun

cmd_exec() {
    pick_prefix
    [ "$#" -ge 2 ] || usage_die "exec needs HOST and a command"
    local h
    h="$(host_name "$1")"
    shift
    # A fresh UTS namespace per command, named like the host.
    # shellcheck disable=SC2016 # expanded by the inner sh
    exec ip netns exec "$h" unshare --uts /bin/sh -c 'hostname "$0" && exec "$@"' "$h" "$@"
}

cmd_mpirun() {
    pick_prefix
    [ -f "$STATE/hosts" ] || die "no cluster $PREFIX is up"
    local h0
    h0="$(head -n1 "$STATE/hosts")"
    local args=(mpirun --allow-run-as-root
        --hostfile "$STATE/hostfile"
        --mca plm_rsh_agent "$STATE/agent"
        --mca plm_rsh_no_tree_spawn 1
        --mca btl "self,vader,tcp"
        --mca btl_tcp_if_include eth0
        --mca oob_tcp_if_include eth0)
    # The simulated hosts share this machine's cores: no binding, and
    # waiting ranks yield (both overridable on the command line).
    export OMPI_MCA_hwloc_base_binding_policy="${OMPI_MCA_hwloc_base_binding_policy:-none}"
    export OMPI_MCA_mpi_yield_when_idle="${OMPI_MCA_mpi_yield_when_idle:-1}"
    exec "$SELF" --prefix "$PREFIX" exec "$h0" "${args[@]}" "$@"
}

cmd_status() {
    if [ -z "$PREFIX" ] && [ -z "${SIM_PREFIX:-}" ]; then
        local d n=0
        for d in "$STATE_ROOT"/*/; do
            [ -f "$d/hosts" ] || continue
            n=$((n + 1))
            echo "$(basename "$d"): $(wc -l <"$d/hosts") host(s), link $(cat "$d/link")"
        done
        [ "$n" -gt 0 ] || echo "no simulated cluster is up"
        [ "$n" -ne 1 ] || { PREFIX="$(basename "$(dirname "$(ls "$STATE_ROOT"/*/hosts)")")"; }
        [ "$n" -eq 1 ] || return 0
    fi
    pick_prefix
    [ -f "$STATE/hosts" ] || die "no cluster $PREFIX is up"
    echo "cluster $PREFIX: link $(cat "$STATE/link"), state $STATE"
    local h addr procs
    while read -r h; do
        addr="$(ip netns exec "$h" ip -o -4 addr show dev eth0 2>/dev/null | awk '{print $4}')"
        procs="$(ip netns pids "$h" 2>/dev/null | wc -l)"
        echo "  $h  $addr  $procs process(es)"
    done <"$STATE/hosts"
}

# ---------------------------------------------------------------- main

PREFIX=""
STATE=""
while [ "$#" -gt 0 ]; do
    case "$1" in
    -h | --help)
        usage
        exit 0
        ;;
    --prefix)
        [ "$#" -ge 2 ] || usage_die "--prefix needs a value"
        PREFIX="$2"
        shift 2
        ;;
    --prefix=*)
        PREFIX="${1#--prefix=}"
        shift
        ;;
    *) break ;;
    esac
done
[ "$#" -gt 0 ] || usage_die "a command is needed"
command="$1"
shift
case "$command" in
up) cmd_up "$@" ;;
down) cmd_down "$@" ;;
exec) cmd_exec "$@" ;;
mpirun) cmd_mpirun "$@" ;;
status) cmd_status "$@" ;;
hostfile)
    pick_prefix
    echo "$STATE/hostfile"
    ;;
agent)
    pick_prefix
    echo "$STATE/agent"
    ;;
hosts)
    pick_prefix
    cat "$STATE/hosts"
    ;;
*) usage_die "unknown command '$command'" ;;
esac
