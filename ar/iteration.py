"""One iteration of the loop, `ar run`, top to bottom (SPEC §5).

lock -> reconcile -> preflight -> snapshot -> detach -> launch and watch -> finalize
(extract, decide, write the result, promote or restore, log, termination).
"""

from __future__ import annotations

import errno
import os
import shutil
import time

from ar import chain, launch, lines, outcome_record, supervisor
from ar.active import busy_error, record_owner
from ar.best import best_value, load_best, restore_source, train_py_problem
from ar.durable import read_json, sha256_file, write_bytes_atomic, write_json_atomic
from ar.errors import EXIT_ERROR, EXIT_TERMINATED, EXIT_UNCLEAN, ArError, as_typed
from ar.faults import crash_point
from ar.layout import ExperimentPaths, RunPaths, format_run_id
from ar.lock import IterationLock
from ar.runnote import read_run_note
from ar.seal import check_seal
from ar.settings import Session, load_session
from ar.repair import repair
from ar.state import load_state
from ar.termination import terminated_by, with_chain
from ar.judge import file_text, finalize
from ar.noise import follow_up
from ar.text import utc_time
from ar.time_limit import run_seconds



def run_iteration(paths: ExperimentPaths, seconds: int | None, wait: float | None, knobs: tuple | None = None) -> int:
    lock = IterationLock(paths.lock)
    if not lock.try_acquire():
        raise busy_error(paths)
    repair(paths)
    session = load_session(paths)
    preflight(paths, session)
    if knobs is not None:
        set_knobs(paths, *knobs)
    check_mutation_budget(paths, session)
    usual = run_seconds(paths, session)
    budget = seconds or usual
    run = start_run(paths)
    chain.consume_reentry(paths)  # a chain child's first run: the non-interactive re-entry is over
    crash_point("after_snapshot")
    channel = supervisor.detach(lock, paths.supervisor_log)  # from here on, two processes
    if channel.is_caller:
        return channel.follow(run.run_id, wait)
    supervisor.run_supervised(lambda: own_run(paths, session, run, budget, usual, channel), channel)
    raise AssertionError("unreachable: the supervisor exits")


def own_run(paths: ExperimentPaths, session: Session, run: RunPaths, budget: int, usual: int, channel) -> int:
    """The supervisor's part: launch and watch, then judge and record; with --baseline-repeats,
    the repeats of the baseline, and with --confirm a candidate's confirmations, follow at once,
    each its own run of the same snapshot."""
    first = True
    while True:
        result = _launch_and_judge(paths, session, run, budget, usual, channel, announce=first)
        if result is None:
            return EXIT_ERROR
        group = follow_up(result, session.loop.baseline_repeats)
        if group is None:
            break
        run, first = start_run(paths, source=paths.run(group["of"]).train_py, group=group), False
    paths.active.unlink(missing_ok=True)
    for line in lines.finished(paths, result):
        channel.line(line)
    return lines.exit_code(result)


def _launch_and_judge(paths: ExperimentPaths, session: Session, run: RunPaths, budget: int, usual: int, channel, announce: bool):
    """One run under the watchdog, judged and recorded; None when a full disk stopped the record."""
    started = time.time()

    def launched(pid: int) -> None:  # runs while the training starts up, off its critical path
        record_owner(paths, run.run_id, pid=os.getpid(), started_at=utc_time(started), seconds=budget)
        if announce:
            channel.line(lines.launched(run.run_id, budget, read_run_note(file_text(run.train_py)), usual))
        crash_point("after_spawn")

    outcome = launch.watch(paths, session, run, budget, launched)
    try:
        outcome_record.save(run, outcome, started, budget)  # from here on the run is judged, whatever happens
        crash_point("after_watch")
        return finalize(paths, session, run, outcome, started, budget)
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        channel.line(disk_full_line(paths, run, exc))
        return None


def preflight(paths: ExperimentPaths, session: Session) -> None:
    """Refuse a run the loop must not make: processes left over, frozen files edited, loop over."""
    check_unclean(paths)
    check_train_py(paths)
    check_seal(paths)
    for name, digest in session.experiment.protected.items():
        path = paths.dir / name
        if not path.exists() or sha256_file(path) != digest:
            raise ArError(
                f"{name} changed since `ar init` (only train.py may change between runs)",
                f"restore {paths.relative(path)} to its original content, or start a new experiment with `ar init`",
            )
    stop = terminated_by(session.limits(), load_state(paths).counters(best_value(load_best(paths))))
    stop = with_chain(stop, *chain.budget(paths, session.loop))
    if stop:
        raise ArError(
            f"experiment '{paths.slug}' has terminated ({stop})",
            _TERMINATED_HINTS.get(stop, "the loop is over: stop and report the best (`ar report`)"),
            EXIT_TERMINATED,
        )


# The agent reads these: they end the loop; changing limits is the user's decision, never invited.
_TERMINATED_HINTS = {
    "manual": "the user interrupted it: stop the loop; only the user resumes it",
    "consecutive_failures": "the environment keeps failing (see `ar tail`): stop the loop and tell the user",
    "chain_budget": "the chain is complete: stop the loop and report the best (`ar report`)",
}


def check_train_py(paths: ExperimentPaths) -> None:
    """Only a regular file of sane size is snapshotted (a symlink to /dev/zero would fill the disk)."""
    problem = train_py_problem(paths.train_py)
    if problem is None:
        return
    fix = ("keep data and weights out of train.py: load them from files" if "MiB" in problem
           else "put the training script back as a regular file; `ar session --resume revert-best` restores the best one")
    raise ArError(f"{paths.relative(paths.train_py)} {problem}", fix)


def set_knobs(paths: ExperimentPaths, settings: dict, note: str | None) -> None:
    """`--set` / `--note`: train.py rewritten before its snapshot (under the lock, after repair)."""
    from ar.knobs import apply_settings

    source = paths.train_py.read_text(encoding="utf-8")
    changed = apply_settings(source, settings, note)
    if changed != source:
        write_bytes_atomic(paths.train_py, changed.encode())


def check_mutation_budget(paths: ExperimentPaths, session: Session) -> None:
    """Refuse a train.py that changes more lines than `--max-changed-lines` against the one it
    would be restored to (the best's, or the baseline's); the first run is the baseline itself."""
    limit = session.loop.max_changed_lines
    if limit is None or load_state(paths).last_run == 0:
        return
    from ar.diffsize import changed_lines, diff_size, shown

    best = load_best(paths)
    size = diff_size(file_text(restore_source(paths, best)), file_text(paths.train_py))
    if changed_lines(size) > limit:
        against = best["run_id"] if best else "the baseline"
        raise ArError(f"train.py changes {changed_lines(size)} lines ({shown(size)}) against {against}; the mutation budget is {limit}",
                      "make a smaller change (undo part of the edit), or raise it with `ar session --max-changed-lines N`")


def check_unclean(paths: ExperimentPaths) -> None:
    if not paths.unclean.exists():
        return
    from ar.watchdog import still_alive

    record = read_json(paths.unclean, f"delete {paths.relative(paths.unclean)} once no process of the run is left")
    alive = still_alive([pid for pid in record.get("pids", []) if isinstance(pid, int)])
    if not alive:
        paths.unclean.unlink()  # the survivors have gone: the GPU is free again
        return
    raise ArError(
        f"processes of {record.get('run_id')} survived SIGKILL (pids {' '.join(map(str, alive[:8]))})",
        f"end them (they may hold GPU memory), then delete {paths.relative(paths.unclean)}",
        EXIT_UNCLEAN,
    )


def start_run(paths: ExperimentPaths, source=None, group: dict | None = None) -> RunPaths:
    """A new run directory with its snapshot of train.py (or of `source`: a repeat's series snapshot)."""
    number = load_state(paths).last_run + 1
    while paths.run(format_run_id(number)).dir.exists():  # never reuse an id, whatever state says
        number += 1
    run = paths.run(format_run_id(number))
    record_owner(paths, run.run_id)  # before the run exists: a run directory always has an owner on record
    paths.runs.mkdir(exist_ok=True)
    run.dir.mkdir()
    try:
        shutil.copyfile(source or paths.train_py, run.train_py)
        if group is not None:
            write_json_atomic(run.group, group)
        if number == 1:
            # The baseline is what the user set up for the first run, not the scaffold it replaced:
            # without a best, a failed run restores this, never a template.
            write_bytes_atomic(paths.baseline_py, run.train_py.read_bytes())
        run.ckpt_dir.mkdir()  # $AR_CKPT_DIR exists from the start: train.py saves into it without a mkdir
        outcome_record.reserve(run)
    except OSError as exc:
        shutil.rmtree(run.dir, ignore_errors=True)  # never started: no run to record
        if exc.errno not in DISK_FULL:
            raise
        raise ArError(f"disk full: cannot start {run.run_id} in {paths.relative(run.dir)} (on {mount_point(paths.dir)})",
                      "free space there, then run again") from None
    return run


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def mount_point(path) -> str:
    """The mount point of the filesystem holding path: where space must be freed."""
    path = os.path.realpath(path)
    device = os.stat(path).st_dev
    while path != "/" and os.stat(os.path.dirname(path)).st_dev == device:
        path = os.path.dirname(path)
    return path


def disk_full_line(paths: ExperimentPaths, run: RunPaths, exc: OSError) -> str:
    where = f"{exc.filename or paths.relative(run.dir)} (on {mount_point(paths.dir)})"
    if run.result.exists():
        return as_typed(f"ar: disk full after {run.run_id}'s result was written, at {where} "
                        f"(fix: free space there, then `ar status` finishes recording it)")
    return as_typed(f"ar: disk full writing {where}; {run.run_id} finished and its outcome is kept "
                    f"(fix: free space there, then `ar status` judges it on its log)")
