#!/usr/bin/env bash
# Runs a training command again and again, resuming from its last
# checkpoint, until it finishes: for preemptible nodes, spot instances and
# Slurm jobs that outlive their time limit.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: launch/resume-loop.sh --checkpoint-dir DIR [OPTIONS] -- COMMAND [ARGS...]

Runs

    COMMAND ARGS... --checkpoint-dir DIR --resume auto

(COMMAND is any launcher line ending in ringtrain's train arguments, e.g.
`launch/mpirun.sh -np 4 train --steps 100000 --checkpoint-every 500`, or
`srun --mpi=pmix target/release/ringtrain train ...`). `--resume auto`
starts from the newest checkpoint in DIR, or from scratch when there is
none. The run is done, and so is this loop, when COMMAND exits 0 and
ringtrain has written DIR/FINISHED (it does after the last step; a run
ended early by --stop-after exits 0 without it). After any other outcome it
is started again (resuming), at most --max-attempts times in all. Exit status 2 (ringtrain: bad flag, file or config) and 4 (a NaN/Inf
loss or gradient, which a resumed run would meet again) are not retried:
running again cannot fix it.

Options:
  --checkpoint-dir DIR   where the checkpoints are (required; created if missing)
  --max-attempts N       attempts in all, the first included (default 10)
  --delay S              seconds to wait before a retry (default 10)
  -h, --help             this text

Signals. SIGTERM or SIGINT: passed on to COMMAND, which is waited for;
then the loop ends with 143 or 130 (no retry). SIGUSR1: the same, and then,
inside a Slurm job, `scontrol requeue $SLURM_JOB_ID` puts the job back in
the queue (it starts again later and this loop resumes from DIR); outside
Slurm the loop ends with 138. For a time-limited Slurm job that requeues
itself, submit with

    #SBATCH --requeue
    #SBATCH --signal=B:USR1@120     # USR1 to this script 120 s before the limit

and run this script in the batch script (not under srun), e.g. with
LAUNCH=... launch/slurm.sbatch or directly:

    launch/resume-loop.sh --checkpoint-dir ckpt -- \
        srun --mpi=pmix target/release/ringtrain train --checkpoint-every 200

Work since the last checkpoint is lost when a run is stopped, so choose
--checkpoint-every so that a checkpoint is written well within the
warning time.

Exit status: 0 when the run is done (DIR/FINISHED written); 2 on a user error; 4 on NaN/Inf; 130, 143 or 138
after a signal; else the status of the last attempt.
USAGE
}

die() {
    echo "resume-loop.sh: $*" >&2
    exit 2
}

dir=""
max=10
delay=10
while [ "$#" -gt 0 ]; do
    case "$1" in
    -h | --help)
        usage
        exit 0
        ;;
    --checkpoint-dir | --max-attempts | --delay)
        [ "$#" -ge 2 ] || die "$1 needs a value (see --help)"
        case "$1" in
        --checkpoint-dir) dir="$2" ;;
        --max-attempts) max="$2" ;;
        --delay) delay="$2" ;;
        esac
        shift 2
        ;;
    --)
        shift
        break
        ;;
    *) die "unknown option '$1' (the command goes after --; see --help)" ;;
    esac
done
[ -n "$dir" ] || die "--checkpoint-dir DIR is required (see --help)"
[ "$#" -ge 1 ] || die "no command to run after -- (see --help)"
[[ "$max" =~ ^[1-9][0-9]*$ ]] || die "--max-attempts must be a positive integer, got '$max'"
[[ "$delay" =~ ^[0-9]+$ ]] || die "--delay must be a whole number of seconds, got '$delay'"
mkdir -p "$dir" || die "cannot create $dir"

child=""
stop=""  # the signal that asked us to stop, once one has

# shellcheck disable=SC2317 # called from the traps
on_signal() {
    stop="$1"
    echo "resume-loop.sh: SIG$1: stopping the run" >&2
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null || true
    fi
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap 'on_signal USR1' USR1

# Ends the loop after a stop signal (see --help).
finish_stopped() {
    case "$stop" in
    TERM) exit 143 ;;
    INT) exit 130 ;;
    USR1)
        if [ -n "${SLURM_JOB_ID:-}" ] && command -v scontrol >/dev/null 2>&1; then
            echo "resume-loop.sh: requeueing Slurm job $SLURM_JOB_ID" >&2
            scontrol requeue "$SLURM_JOB_ID"
            exit 0
        fi
        exit 138
        ;;
    esac
}

attempt=0
status=0
while [ "$attempt" -lt "$max" ]; do
    attempt=$((attempt + 1))
    echo "resume-loop.sh: attempt $attempt of $max: $* --checkpoint-dir $dir --resume auto" >&2
    "$@" --checkpoint-dir "$dir" --resume auto &
    child=$!
    # A trapped signal interrupts `wait`; wait again until COMMAND is gone.
    status=0
    while :; do
        wait "$child" && status=0 || status=$?
        kill -0 "$child" 2>/dev/null || break
    done
    child=""
    finish_stopped
    if [ "$status" -eq 0 ] && [ -f "$dir/FINISHED" ]; then
        echo "resume-loop.sh: done after $attempt attempt(s)" >&2
        exit 0
    fi
    if [ "$status" -eq 0 ]; then
        # Exit 0 without the marker: stopped before the last step.
        echo "resume-loop.sh: attempt $attempt stopped before the last step (no $dir/FINISHED): not done, resuming" >&2
        status=3
    fi
    if [ "$status" -eq 2 ]; then
        echo "resume-loop.sh: exit status 2 (a user error): not retrying" >&2
        exit 2
    fi
    if [ "$status" -eq 4 ]; then
        # Resuming would reach the same NaN/Inf again: the run is deterministic.
        echo "resume-loop.sh: exit status 4 (a NaN/Inf loss or gradient): not retrying" >&2
        exit 4
    fi
    [ "$status" -eq 3 ] || echo "resume-loop.sh: attempt $attempt exited with status $status" >&2
    if [ "$attempt" -lt "$max" ]; then
        # In the background, so that a signal ends the wait at once.
        sleep "$delay" &
        child=$!
        wait "$child" || true
        kill "$child" 2>/dev/null || true
        child=""
        finish_stopped
    fi
done
echo "resume-loop.sh: giving up after $max attempt(s)" >&2
exit "$status"
