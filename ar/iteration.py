"""One iteration of the loop, `ar run` and `ar submit`, top to bottom (SPEC §5, §10).

books lock -> repair -> a free slot (or the queue) -> preflight -> snapshot -> detach ->
launch and watch -> under the books lock: finalize (extract, decide, write the result, promote
or restore, log, termination) -> the next queued run on the same slot.
"""

from __future__ import annotations

import errno
import os
import shutil
import time

from ar import chain, launch, lines, outcome_record, supervisor
from ar.active import busy_error, record_owner
from ar.best import best_value, load_best, restore_source, restore_train_py, train_py_problem
from ar.durable import read_json, sha256_file, write_bytes_atomic, write_json_atomic
from ar.errors import EXIT_BUSY, EXIT_ERROR, EXIT_OK, EXIT_RUNNING, EXIT_TERMINATED, EXIT_UNCLEAN, ArError, as_typed
from ar.faults import crash_point
from ar.layout import ExperimentPaths, RunPaths, format_run_id
from ar.runnote import read_run_note
from ar.seal import check_seal, seal
from ar.settings import Session, load_session
from ar.repair import repair
from ar.slots import Claimed, books, claim, in_flight, needs_adoption, queued_entries, set_queue, start_reporting
from ar.state import load_state
from ar.termination import terminated_by, with_chain
from ar.judge import file_text, finalize
from ar.noise import follow_up
from ar.text import utc_time
from ar.time_limit import run_seconds



def run_iteration(paths: ExperimentPaths, seconds: int | None, wait: float | None, knobs: tuple | None = None) -> int:
    """`ar run`: a run on a free slot, followed until its verdict (or `wait` seconds)."""
    session = load_session(paths)
    adopt(paths, session)
    with books(paths):
        repair(paths)
        outstanding = len(in_flight(paths)) + len(queued_entries(paths)) if session.loop.slots > 1 else 0
        slot = claim(paths, session.loop.slots)
        if slot is None:
            raise busy_error(paths)
        try:
            check_room(paths, session, outstanding)
            run, budget, usual = _prepare(paths, session, seconds, knobs, slot.index, submitted=False)
        except BaseException:
            slot.lock.close()
            raise
    chain.consume_reentry(paths)  # a chain child's first run: the non-interactive re-entry is over
    crash_point("after_snapshot")
    channel = _detach_supervisor(paths, session, run, budget, slot)  # from here on, two processes
    code = channel.follow(run.run_id, wait)
    if session.loop.slots > 1 and code not in (EXIT_RUNNING, EXIT_ERROR):
        run.shown.touch()  # seen here: `ar wait --any` reports the other runs
    return code


def submit_iteration(paths: ExperimentPaths, seconds: int | None, knobs: tuple | None = None) -> int:
    """`ar submit`: snapshot train.py as a run on a free slot (or in the queue), restore train.py
    to the best, and return at once with one line."""
    session = load_session(paths)
    adopt(paths, session)
    with books(paths):
        repair(paths)
        running, waiting = len(in_flight(paths)), queued_entries(paths)
        slot = claim(paths, session.loop.slots)
        try:
            if slot is None and len(waiting) >= session.loop.slots:
                raise ArError(f"all {session.loop.slots} slots are busy and {len(waiting)} runs wait in the queue",
                              "collect a result with `ar wait --any --wait 540`, then submit", EXIT_BUSY)
            check_room(paths, session, running + len(waiting))
            run, budget, _ = _prepare(paths, session, seconds, knobs, None if slot is None else slot.index, submitted=True)
            restore_train_py(paths, load_best(paths))  # the next candidate starts from the best
            start_reporting(paths)
        except BaseException:
            if slot is not None:
                slot.lock.close()
            raise
    chain.consume_reentry(paths)
    if slot is None:
        print(f"queued {run.run_id} (all {session.loop.slots} slots busy); {running} running, {len(waiting) + 1} queued")
        return EXIT_OK
    os.close(_detach_supervisor(paths, session, run, budget, slot).fd)  # nobody follows it
    print(f"submitted {run.run_id} on slot {slot.index + 1}; {running + 1} running, {len(waiting)} queued")
    return EXIT_OK


def adopt(paths: ExperimentPaths, session: Session) -> None:
    """New supervisors for work whose supervisor died: a Slurm job still running (re-attached by
    its job id, on the slot its record holds) and runs left in the queue with a slot free. (A
    supervisor that finds the queue empty frees its slot under the books lock, so a submit never
    queues behind a slot that is about to go idle.)"""
    if not needs_adoption(paths):
        return
    started = []
    with books(paths):
        for index, record in repair(paths):
            slot = claim(paths, index + 1, only=index)
            if slot is not None:
                run = paths.run(record["run_id"])
                budget = record.get("seconds") if type(record.get("seconds")) is int else session.loop.seconds
                record_owner(paths, run.run_id, index, seconds=budget)
                started.append((slot, run, budget))
        while queued_entries(paths) and not stopped_by(paths, session) and (slot := claim(paths, session.loop.slots)):
            started.append((slot, *_take_queued(paths, slot.index)))
    for slot, run, budget in started:
        os.close(_detach_supervisor(paths, session, run, budget, slot).fd)


def _detach_supervisor(paths: ExperimentPaths, session: Session, run: RunPaths, budget: int, slot: Claimed):
    """Fork the supervisor that owns `slot` from now on; returns the caller's end of its channel."""
    channel = supervisor.detach(slot.lock, paths.supervisor_log)
    if not channel.is_caller:
        usual = run_seconds(paths, session)
        supervisor.run_supervised(lambda: own_slot(paths, session, run, budget, usual, channel, slot), channel)
    return channel


def _prepare(paths: ExperimentPaths, session: Session, seconds: int | None, knobs: tuple | None, slot: int | None, submitted: bool):
    """Under the books lock: the checks, then the new run (on `slot`, or queued when None)."""
    preflight(paths, session)
    if knobs is not None:
        set_knobs(paths, *knobs)
    check_mutation_budget(paths, session)
    usual = run_seconds(paths, session)
    budget = seconds or usual
    run = start_run(paths, slot=slot, seconds=budget, submitted=submitted)
    return run, budget, usual


def own_slot(paths: ExperimentPaths, session: Session, run: RunPaths, budget: int, usual: int, channel, slot: Claimed) -> int:
    """The supervisor's part: the run it was started for (its verdict goes to the caller), then
    the runs waiting in the queue, one after another, while the loop goes on."""
    code = own_run(paths, session, run, budget, usual, channel, slot.index)
    session = load_session(paths)  # a slot may run for hours: the limits as they are now
    following = next_queued(paths, session, slot)  # before the caller returns: its next `ar run` finds the slot free
    channel.send("X", str(code))  # the caller is done; this slot's work may not be
    while following is not None:
        own_run(paths, session, *following, run_seconds(paths, session), channel, slot.index)
        session = load_session(paths)
        following = next_queued(paths, session, slot)
    return code


def own_run(paths: ExperimentPaths, session: Session, run: RunPaths, budget: int, usual: int, channel, slot: int = 0) -> int:
    """Launch and watch, then judge and record; with --baseline-repeats, the repeats of the
    baseline, and with --confirm a candidate's confirmations, follow at once, each its own run
    of the same snapshot, on the same slot."""
    first = True
    while True:
        result = _launch_and_judge(paths, session, run, budget, usual, channel, slot, announce=first)
        if result is None:
            return EXIT_ERROR
        group = follow_up(result, session.loop.baseline_repeats)
        if group is None:
            break
        with books(paths):
            repair(paths)
            run = start_run(paths, source=paths.run(group["of"]).train_py, group=group, slot=slot, seconds=budget,
                            submitted=paths.run(group["of"]).submitted.exists())
        first = False
    for line in lines.finished(paths, result):
        channel.line(line)
    return lines.exit_code(result)


def _launch_and_judge(paths: ExperimentPaths, session: Session, run: RunPaths, budget: int, usual: int, channel, slot: int, announce: bool):
    """One run under the watchdog, judged and recorded; None when a full disk stopped the record."""
    started = time.time()

    def launched(pid: int) -> None:  # runs while the training starts up, off its critical path
        record_owner(paths, run.run_id, slot, pid=os.getpid(), started_at=utc_time(started), seconds=budget)
        if announce:
            channel.line(lines.launched(run.run_id, budget, read_run_note(file_text(run.train_py)), usual))
        crash_point("after_spawn")

    outcome = launch.watch(paths, session, run, budget, launched, slot)
    if run.job.exists():
        from ar.backends.run_job import job_started

        started = job_started(run) or started  # the job's own start: a re-attached supervisor came later
    try:
        outcome_record.save(run, outcome, started, budget)  # from here on the run is judged, whatever happens
        crash_point("after_watch")
        with books(paths):
            repair(paths)  # another slot's supervisor may have died: its run is recorded first
            result = finalize(paths, session, run, outcome, started, budget)
            paths.slot_record(slot).unlink(missing_ok=True)  # with the record: no kill leaves it naming a recorded run
            return result
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        channel.line(disk_full_line(paths, run, exc))
        return None


def next_queued(paths: ExperimentPaths, session: Session, slot: Claimed) -> tuple[RunPaths, int] | None:
    """The oldest queued run, now owned by this slot; None when the queue is empty, or the loop
    has ended (the runs waiting are then dropped: they never started). The slot is freed before
    the books are: a submit that finds every slot busy can count on someone to run its queue."""
    with books(paths):
        repair(paths)
        if queued_entries(paths) and not stopped_by(paths, session):
            return _take_queued(paths, slot.index)
        drop_queue(paths)
        slot.lock.close()
        return None


def _take_queued(paths: ExperimentPaths, slot: int) -> tuple[RunPaths, int]:
    head, *rest = queued_entries(paths)
    record_owner(paths, head["run_id"], slot, seconds=head["seconds"])  # before it leaves the queue: always owned or queued
    set_queue(paths, rest)
    return paths.run(head["run_id"]), head["seconds"]


def drop_queue(paths: ExperimentPaths) -> list[str]:
    """Remove the runs waiting in the queue (they never started: no run to record). Books lock held."""
    dropped = [entry["run_id"] for entry in queued_entries(paths)]
    for run_id in dropped:
        shutil.rmtree(paths.run(run_id).dir, ignore_errors=True)
    set_queue(paths, [])
    if dropped:
        seal(paths)
    return dropped


def check_room(paths: ExperimentPaths, session: Session, outstanding: int) -> None:
    """max_runs counts finished runs; runs in flight will finish too, so a submit that would
    overshoot it waits instead."""
    limit = session.loop.max_runs
    if limit is not None and outstanding and load_state(paths).runs + outstanding >= limit:
        raise ArError(f"max_runs {limit} is reached counting the {outstanding} runs in flight",
                      "collect them with `ar wait --any --wait 540`; the loop ends with them", EXIT_BUSY)


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
    stop = stopped_by(paths, session)
    if stop:
        raise ArError(
            f"experiment '{paths.slug}' has terminated ({stop})",
            _TERMINATED_HINTS.get(stop, "the loop is over: stop and report the best (`ar report`)"),
            EXIT_TERMINATED,
        )


def stopped_by(paths: ExperimentPaths, session: Session) -> str | None:
    stop = terminated_by(session.limits(), load_state(paths).counters(best_value(load_best(paths))))
    return with_chain(stop, *chain.budget(paths, session.loop))


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


def start_run(paths: ExperimentPaths, source=None, group: dict | None = None, slot: int | None = 0,
              seconds: int | None = None, submitted: bool = False) -> RunPaths:
    """A new run directory with its snapshot of train.py (or of `source`: a repeat's series
    snapshot), owned by `slot`, or waiting in the queue when slot is None. Books lock held."""
    number = load_state(paths).highest + 1
    while paths.run(format_run_id(number)).dir.exists():  # never reuse an id, whatever state says
        number += 1
    run = paths.run(format_run_id(number))
    # Before the run exists: a run directory always has an owner on record, or a place in the queue.
    if slot is None:
        set_queue(paths, [*queued_entries(paths), {"run_id": run.run_id, "seconds": seconds}])
    else:
        record_owner(paths, run.run_id, slot, seconds=seconds)
    paths.runs.mkdir(exist_ok=True)
    run.dir.mkdir()
    try:
        shutil.copyfile(source or paths.train_py, run.train_py)
        if group is not None:
            write_json_atomic(run.group, group)
        if submitted:
            run.submitted.touch()
        if number == 1:
            # The baseline is what the user set up for the first run, not the scaffold it replaced:
            # without a best, a failed run restores this, never a template.
            write_bytes_atomic(paths.baseline_py, run.train_py.read_bytes())
        run.ckpt_dir.mkdir()  # $AR_CKPT_DIR exists from the start: train.py saves into it without a mkdir
        outcome_record.reserve(run)
        seal(paths)  # the new run directory is ar's own write: a submit beside this run must not see a change
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
