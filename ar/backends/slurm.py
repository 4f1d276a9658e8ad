"""Run one training command as a Slurm batch job, under ar's own clock.

The job's batch script writes two markers into the run's directory (a shared filesystem): when it
started, and how the command ended. They let a watcher that was started later, by another process,
judge the job exactly as the one that submitted it would have: ar's time limit counts from the
job's start, never from the submit (queue time is not the run's) nor from when watching began.
Slurm itself is only asked what state the job is in, and to signal it; every call to it has a
timeout, and a call that fails or hangs is tried again at the next poll.
"""

from __future__ import annotations

import math
import os
import select
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ar.watchdog import Outcome

SCRIPT_NAME = ".ar-job.sh"
START_MARKER = ".ar-job-start"  # epoch seconds at which the batch script began
EXIT_MARKER = ".ar-job-exit"  # "<exit code> <epoch seconds>" once the command has ended

_QUERY_SECONDS = 15.0  # one squeue/scontrol/sacct/scancel call; a hung slurmctld must not hang ar
_SUBMIT_SECONDS = 60.0  # sbatch retries on its own while the controller is busy
_CANCEL_POLL_SECONDS = 0.25
# The batch script itself ends the command grace seconds after SIGTERM; this long again passes before
# Slurm is asked to SIGKILL (its own grace granularity, a /proc scan, the exit marker).
_SCRIPT_SLACK_SECONDS = 5.0
_SWEEP_GRACE_MAX_SECONDS = 5  # for what the command left behind when it ended on its own (as ar.watchdog)
# After SIGKILL, for the job to leave COMPLETING: Slurm's own kill still waits KillWait (30 s by
# default) after a SIGTERM of its own.
_GONE_SECONDS = 60.0
# Slurm's --time is a backstop for a job whose watcher died; it must not fire before ar's own
# deadline plus the grace ar gives, and Slurm counts it in whole minutes.
_TIME_LIMIT_SLACK_SECONDS = 60
_INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# States in which the job can no longer start or have a process; anything else (an unknown state
# included) may still run.
_ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
          "PREEMPTED", "REVOKED", "TIMEOUT"}
_STARTED = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}

_SCRIPT = """\
#!/bin/bash
# Written by ar (ar/backends/slurm.py): one training command under ar's clock.
cd -- {cwd} || exit 1
start=$(date +%s.%N)
printf '%s\\n' "$start" > {start_tmp} && mv -f -- {start_tmp} {start}
export AR_DEADLINE=$(( ${{start%.*}} + {seconds} ))
# Every process of the job carries this in its environment (a job id alone is unique only within
# its cluster); by it the job's processes are found when Slurm loses them: its proctrack/linuxproc
# loses a process whose parent died, and a process that called setsid leaves the command's group.
export AR_SLURM_JOB="$SLURM_CLUSTER_NAME/$SLURM_JOB_ID"
tag="AR_SLURM_JOB=$AR_SLURM_JOB"

# Sends signal $1 to every other process of this job on this node. Fails if there was none.
signal_job() {{
  local found=1 environ pid var
  for environ in /proc/[0-9]*/environ; do
    pid=${{environ#/proc/}}
    pid=${{pid%/environ}}
    [ "$pid" = $$ ] && continue
    while IFS= read -r -d '' var; do
      [ "$var" = "$tag" ] && {{ kill -"$1" "$pid" 2>/dev/null && found=0; break; }}
    done 2>/dev/null < "$environ"
  done
  return $found
}}

# Waits up to $1 seconds for the other processes of the job to end, then SIGKILLs what is left.
reap_job() {{
  local until=$((SECONDS + $1))
  while ((SECONDS < until)) && signal_job 0; do sleep 0.5; done
  signal_job KILL
}}

# ar cancels with scancel --batch, which signals this shell alone: each process of the job gets
# the signal once, from here. One that comes before the command exists is passed on when it does.
child= stop=
on_signal() {{ stop=$1; [ -n "$child" ] && signal_job "$1"; }}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
# Job control while it starts: the command keeps SIGINT, which bash ignores in background
# commands otherwise. Off again at once, so that no job notice reaches the log.
set -m
bash -c {command} &
child=$!
set +m
[ -n "$stop" ] && signal_job "$stop"
# wait returns early whenever a trap runs; after a signal the command has grace seconds to end.
reaped=
while :; do
  wait "$child"
  code=$?
  kill -0 "$child" 2>/dev/null || break
  [ -n "$stop" ] && [ -z "$reaped" ] && reaped=1 && reap_job {grace}
done
signal_job TERM && reap_job {sweep}  # what the command left behind
printf '%s %s\\n' "$code" "$(date +%s.%N)" > {exit_tmp} && mv -f -- {exit_tmp} {exit}
exit "$code"
"""


class SlurmError(Exception):
    """Slurm refused or could not be asked; the message is one line."""


class JobSpec(NamedTuple):
    command: str  # shell command line, run by bash -c inside the job
    cwd: Path  # project root on the shared filesystem; the job cds there
    env: dict[str, str]  # the job's environment: sbatch's own, which it exports
    log_path: Path  # stdout+stderr of the job, appended
    run_dir: Path  # the run's directory (shared filesystem): the batch script and markers
    seconds: int  # ar's time limit, counted from the job's start
    grace: int  # seconds between SIGTERM and SIGKILL
    job_name: str
    partition: str | None
    sbatch_args: list[str]  # the user's extra arguments, appended verbatim


class _Record(NamedTuple):
    """What Slurm remembers of a job; None where it does not say."""
    state: str | None
    exit_code: int | None
    start: float | None
    end: float | None


_UNKNOWN = _Record(None, None, None, None)


def submit(spec: JobSpec) -> str:
    """Write run_dir/.ar-job.sh and sbatch it; returns the job id."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    for name in (START_MARKER, EXIT_MARKER):
        (spec.run_dir / name).unlink(missing_ok=True)  # an earlier job's markers would judge this one
    script = spec.run_dir / SCRIPT_NAME
    script.write_text(_batch_script(spec), encoding="utf-8")
    script.chmod(0o755)
    argv = ["sbatch", *_sbatch_options(spec), *spec.sbatch_args, str(script)]
    try:
        done = subprocess.run(argv, cwd=spec.cwd, env=spec.env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=_SUBMIT_SECONDS)
    except FileNotFoundError:
        raise SlurmError("sbatch was not found on PATH") from None
    except subprocess.TimeoutExpired:
        # It may have submitted the job all the same; its name says whose it is.
        raise SlurmError(f"sbatch did not answer within {_SUBMIT_SECONDS:.0f} s (job {spec.job_name!r} may be queued)") from None
    job_id = done.stdout.strip().split(";")[0]  # --parsable prints "id" or "id;cluster"
    if done.returncode != 0 or not job_id.isdigit():
        raise SlurmError(f"sbatch failed: {_last_line(done.stderr) or _last_line(done.stdout) or f'exit code {done.returncode}'}")
    return job_id


def watch(spec: JobSpec, job_id: str, poll_seconds: float = 1.0) -> Outcome:
    """Poll until the job ends, the deadline (from the job's start), or an interrupt of this process.

    Must be called from the main thread: it installs SIGINT/SIGTERM/SIGHUP handlers for its duration.
    """
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    stop: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in _INTERRUPTS}
    previous_wake = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    try:
        start: float | None = None
        while True:
            state = _state(job_id)  # None when squeue failed: asked again at the next poll
            # The script writes the exit marker once all of the command has ended: it answers for
            # an squeue that cannot.
            if state in _ENDED or (state is None and (spec.run_dir / EXIT_MARKER).exists()):
                return _ended(spec, job_id, start)
            if start is None:
                start = _start_time(spec, job_id, state)
            if stop:
                return _cancelled(spec, job_id, start, "interrupted")
            if start is not None and time.time() >= start + spec.seconds:
                return _cancelled(spec, job_id, start, "timeout")
            timeout = poll_seconds if start is None else min(poll_seconds, max(0.0, start + spec.seconds - time.time()))
            select.select([wake_r], [], [], timeout)
            _drain(wake_r)
    finally:
        signal.set_wakeup_fd(previous_wake)
        for sig, handler in previous.items():
            # None means a handler installed outside Python, which cannot be put back.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        os.close(wake_r)
        os.close(wake_w)


def alive(job_id: str) -> bool | None:
    """Whether the job may still start or still has processes; None when Slurm cannot be asked."""
    state = _state(job_id)
    return None if state is None else state not in _ENDED


def cancel(job_id: str, grace: float) -> None:
    """End the job: SIGTERM to all of it, SIGKILL after grace; returns once it has left the
    running/completing states, or after a bounded wait."""
    state = _state(job_id)
    if state in _ENDED:
        return
    if state is not None and state not in _STARTED:
        # scancel --signal on a job that has not started waits for it to start; a plain one
        # removes it from the queue.
        _scancel(job_id)
    else:
        _scancel(job_id, "--batch", "--signal=TERM")
        if not _gone(job_id, grace + _SCRIPT_SLACK_SECONDS):
            _scancel(job_id, "--full", "--signal=KILL")
            _scancel(job_id)
    _gone(job_id, _GONE_SECONDS)


def _batch_script(spec: JobSpec) -> str:
    start, exit_ = spec.run_dir / START_MARKER, spec.run_dir / EXIT_MARKER
    q = lambda path: shlex.quote(str(path))  # noqa: E731
    return _SCRIPT.format(cwd=q(spec.cwd), seconds=int(spec.seconds), command=shlex.quote(spec.command),
                          grace=int(spec.grace), sweep=min(int(spec.grace), _SWEEP_GRACE_MAX_SECONDS),
                          start=q(start), start_tmp=q(f"{start}.tmp"), exit=q(exit_), exit_tmp=q(f"{exit_}.tmp"))


def _sbatch_options(spec: JobSpec) -> list[str]:
    minutes = math.ceil((spec.seconds + spec.grace + _TIME_LIMIT_SLACK_SECONDS) / 60)
    options = [
        "--parsable", f"--job-name={spec.job_name}", f"--output={spec.log_path}", "--open-mode=append",
        "--export=ALL",  # the environment ar built, even where the site sets SBATCH_EXPORT=NONE
        "--no-requeue",  # a second start would run the training again under the first one's markers
        f"--time={minutes}",
        # The backstop for a job no one watches any more: grace seconds before Slurm's own limit,
        # the script gets SIGTERM and ends the command as ar's cancel would.
        f"--signal=B:TERM@{max(1, int(spec.grace))}",
    ]
    if spec.partition:
        options.append(f"--partition={spec.partition}")
    return options


def _ended(spec: JobSpec, job_id: str, start: float | None) -> Outcome:
    """Judge a job that has left the queue, from its markers first and Slurm's record second."""
    from ar.watchdog import Outcome

    start = _marker_start(spec) or start
    code, end = _marker_exit(spec)
    record = _record(job_id) if code is None or start is None or end is None else _UNKNOWN
    # The script exits with the command's code, so Slurm's record stands in for an exit marker not
    # yet visible here (a shared filesystem's attribute cache); COMPLETED says the script ended by
    # itself, with 0. Without either, the command did not end on its own (cancelled, killed, never run).
    finished = code is not None or record.state == "COMPLETED"
    if code is None:
        # "0:0" for a script that did not end by itself means none (a job cancelled while pending).
        code = record.exit_code if finished or record.exit_code != 0 else None
    start = start or record.start
    end = end or record.end
    wall = max(0.0, (end or time.time()) - start) if start is not None else 0.0
    if record.state == "TIMEOUT" or (start is not None and wall > spec.seconds):
        status = "timeout"  # ended while no one watched it, past ar's limit or at Slurm's
    else:
        status = "ok" if finished and code == 0 else "crash"
    return Outcome(status=status, exit_code=code, wall_seconds=wall, survivors=[], swept=0)


def _cancelled(spec: JobSpec, job_id: str, start: float | None, status: str) -> Outcome:
    wall = 0.0 if start is None else max(0.0, time.time() - start)  # to the cancel, as ar.watchdog
    cancel(job_id, spec.grace)
    return _ended(spec, job_id, start)._replace(status=status, wall_seconds=wall)


def _start_time(spec: JobSpec, job_id: str, state: str | None) -> float | None:
    """When the job started, or None while it has not (or no one can tell yet)."""
    start = _marker_start(spec)
    if start is None and state in _STARTED:
        start = _record(job_id).start or time.time()  # no marker yet: a slow FS or prolog
    return start


def _marker_start(spec: JobSpec) -> float | None:
    try:
        return float((spec.run_dir / START_MARKER).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _marker_exit(spec: JobSpec) -> tuple[int | None, float | None]:
    try:
        fields = (spec.run_dir / EXIT_MARKER).read_text().split()
        return int(fields[0]), float(fields[1])
    except (OSError, ValueError, IndexError):
        return None, None


def _state(job_id: str) -> str | None:
    """The job's state per squeue; "COMPLETED" once it has left the queue; None if squeue fails."""
    done = _query(["squeue", "-h", "-j", job_id, "-o", "%T"])
    if done is None:
        return None
    if done.returncode != 0:
        # Slurm has forgotten the job (it ended over MinJobAge ago); anything else is a failure.
        return "COMPLETED" if "invalid job id" in done.stderr.lower() else None
    return done.stdout.split()[0] if done.stdout.split() else "COMPLETED"


def _record(job_id: str) -> _Record:
    """The job's final record: scontrol while slurmctld remembers it, else accounting if any."""
    done = _query(["scontrol", "-o", "show", "job", job_id])
    if done is not None and done.returncode == 0 and done.stdout.strip():
        fields = dict(item.split("=", 1) for item in done.stdout.split() if "=" in item)
        return _Record(fields.get("JobState"), _exit_code(fields.get("ExitCode")),
                       _epoch(fields.get("StartTime")), _epoch(fields.get("EndTime")))
    done = _query(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode,Start,End"])
    lines = done.stdout.splitlines() if done is not None and done.returncode == 0 else []
    fields = lines[0].split("|") if lines else []
    if len(fields) != 4:
        return _UNKNOWN
    state = fields[0].split()[0] if fields[0].split() else None  # "CANCELLED by 0"
    return _Record(state, _exit_code(fields[1]), _epoch(fields[2]), _epoch(fields[3]))


def _exit_code(text: str | None) -> int | None:
    """Slurm's "code:signal" as a Popen-style return code (negative = killed by that signal)."""
    try:
        code, sig = (int(part) for part in (text or "").split(":"))
    except ValueError:
        return None
    return -sig if sig else code


def _epoch(text: str | None) -> float | None:
    try:
        return time.mktime(time.strptime(text or "", "%Y-%m-%dT%H:%M:%S"))  # Slurm prints local time
    except ValueError:
        return None


def _gone(job_id: str, seconds: float) -> bool:
    """Wait up to seconds for the job to end; whether it did."""
    deadline = time.monotonic() + seconds
    while True:
        if alive(job_id) is False:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_CANCEL_POLL_SECONDS)


def _scancel(job_id: str, *options: str) -> None:
    _query(["scancel", *options, job_id])  # its failure shows in the state that follows


def _query(argv: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=_QUERY_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
