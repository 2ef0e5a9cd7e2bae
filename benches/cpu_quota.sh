#!/usr/bin/env bash
# A machine with a core (or part of one) per rank, emulated with CPU
# bandwidth quotas: every MPI rank in its own cgroup.
#
#   cpu_quota.sh create NAME PERIOD_US CPUS...   make NAME-rank0, NAME-rank1,
#                      ... (rank r gets CPUS[r] CPUs per PERIOD_US period),
#                      print the directory they live in; CPU_SHARES (v1
#                      cpu.shares, default 1024; v2 cpu.weight = /10.24) lets
#                      the ranks reach their quota on a machine busy with
#                      other work
#   cpu_quota.sh exec DIR NAME CMD [ARGS...]     (what mpirun starts) join
#                      DIR/NAME-rank$OMPI_COMM_WORLD_RANK, then exec CMD
#   cpu_quota.sh remove DIR NAME                 move stragglers out, rmdir
#
# cgroup v1 (/sys/fs/cgroup/cpu: cpu.cfs_period_us, cpu.cfs_quota_us) or v2
# (a cgroup2 mount with the cpu controller: cpu.max). Threads inherit the
# cgroup, so a rank's communication threads share its quota. Exit status 3:
# no cgroup CPU control here (not root, or no cpu controller).
set -euo pipefail

NO_CGROUP=3

die() {
    echo "cpu_quota.sh: $*" >&2
    exit "$NO_CGROUP"
}

# The directory new cgroups go in, and the version: "DIR v1" or "DIR v2".
where() {
    local v1=/sys/fs/cgroup/cpu
    if [ -f "$v1/cpu.cfs_quota_us" ]; then
        echo "$v1 v1"
        return
    fi
    local mnt
    mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
    if [ -n "$mnt" ] && grep -qw cpu "$mnt/cgroup.controllers" 2>/dev/null; then
        echo "$mnt v2"
        return
    fi
    die "no cgroup cpu controller (neither $v1 nor a cgroup2 mount with cpu)"
}

cmd="${1:-}"
shift || true
case "$cmd" in
create)
    [ $# -ge 3 ] || die "usage: create NAME PERIOD_US CPUS..."
    name=$1 period=$2
    shift 2
    loc=$(where) || exit "$NO_CGROUP"
    read -r dir ver <<<"$loc"
    [ -w "$dir" ] || die "cannot create cgroups in $dir (run as root)"
    if [ "$ver" = v2 ]; then
        # Children of the mount's root may use cpu only once it is enabled there.
        grep -qw cpu "$dir/cgroup.subtree_control" ||
            echo +cpu >"$dir/cgroup.subtree_control" 2>/dev/null ||
            die "cannot enable the cpu controller in $dir/cgroup.subtree_control"
    fi
    r=0
    for cpus in "$@"; do
        g="$dir/$name-rank$r"
        mkdir "$g" 2>/dev/null || die "cannot create $g (run as root)"
        quota=$(awk -v c="$cpus" -v p="$period" 'BEGIN { printf "%d", c * p }')
        [ "$quota" -ge 1000 ] || die "rank $r: $cpus CPUs of a ${period} us period is under 1 ms"
        if [ "$ver" = v1 ]; then
            echo "$period" >"$g/cpu.cfs_period_us"
            echo "$quota" >"$g/cpu.cfs_quota_us"
            echo "${CPU_SHARES:-1024}" >"$g/cpu.shares"
        else
            echo "$quota $period" >"$g/cpu.max"
            echo $(((${CPU_SHARES:-1024} * 100 + 1023) / 1024)) >"$g/cpu.weight"
        fi
        r=$((r + 1))
    done
    echo "$dir"
    ;;
exec)
    [ $# -ge 3 ] || die "usage: exec DIR NAME CMD [ARGS...]"
    dir=$1 name=$2
    shift 2
    rank=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-${SLURM_PROCID:-}}}
    [ -n "$rank" ] || die "no rank in the environment (OMPI_COMM_WORLD_RANK)"
    g="$dir/$name-rank$rank"
    [ -d "$g" ] || die "no cgroup $g for rank $rank"
    echo $$ >"$g/cgroup.procs" || die "cannot join $g"
    exec "$@"
    ;;
remove)
    [ $# -eq 2 ] || die "usage: remove DIR NAME"
    dir=$1 name=$2
    for g in "$dir/$name"-rank*; do
        [ -d "$g" ] || continue
        # Stragglers (a rank still exiting) go back to the parent first.
        while read -r pid; do
            echo "$pid" >"$dir/cgroup.procs" 2>/dev/null || true
        done <"$g/cgroup.procs"
        rmdir "$g" 2>/dev/null || sleep 0.2
        [ ! -d "$g" ] || rmdir "$g" || echo "cpu_quota.sh: could not remove $g" >&2
    done
    ;;
*)
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    [ "$cmd" = -h ] || [ "$cmd" = --help ]
    ;;
esac
