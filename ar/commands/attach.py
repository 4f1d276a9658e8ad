"""`ar wait` and `ar stop`: re-attach to, or interrupt, the runs other processes own.

`ar wait --any` reports runs in the order they finish: results.tsv is in finish order, and
.ar-reported.json keeps the offset up to which its rows were printed.
"""

from __future__ import annotations

import os
import signal
import time

from ar import lines
from ar.durable import read_json, read_json_or_none
from ar.errors import EXIT_OK, EXIT_RUNNING, ArError, as_typed
from ar.experiments import resolve_experiment
from ar.active import active_run, busy_error, run_ids
from ar.repair import repair
from ar.layout import ExperimentPaths, format_run_id, run_number
from ar.lock import IterationLock
from ar.settings import Session, load_session
from ar.slots import books, in_flight, queued, reported_offset, set_reported
from ar.time_limit import run_seconds
from ar.state import load_state

STOP_TIMEOUT = 120  # the watchdog's grace (30 s at most) plus time to record the run
POLL_SECONDS = 0.25  # `ar wait --any` looks for a new row this often


def wait_command(expr: str | None, wait: float | None, any_run: bool = False) -> int:
    from ar.iteration import adopt

    paths = resolve_experiment(expr)
    session = load_session(paths)
    adopt(paths, session)  # a Slurm job whose supervisor died is followed again
    if any_run or session.loop.slots > 1:
        return _wait_any(paths, session, wait)
    with IterationLock(paths.lock) as lock:
        running, run_id = _running(paths, lock)
        if running:
            try:
                finished = lock.acquire(wait)
            except KeyboardInterrupt:
                print(as_typed(f"detached; {run_id or 'the run'} is still running (interrupt it with `ar stop`)"))
                return EXIT_RUNNING
            if not finished:
                print(lines.still_running(run_id or "the run"))
                return EXIT_RUNNING
    with books(paths):
        return _print_result(paths, run_id)


def _wait_any(paths: ExperimentPaths, session: Session, wait: float | None) -> int:
    from ar.iteration import adopt

    deadline = None if wait is None else time.monotonic() + wait
    try:
        while True:
            adopt(paths, session)  # runs left waiting by a supervisor that died
            with books(paths):
                repair(paths)
                result = _next_finished(paths, session)
                if result is not None:
                    for line in lines.all_lines(paths, result, run_seconds(paths, session)):
                        print(line)
                    return lines.exit_code(result)
                running = [record or {"run_id": "a run"} for _, record in in_flight(paths)] + [{"run_id": r} for r in queued(paths)]
            if not running:
                print("no run in flight; start one with `ar submit`")
                return EXIT_OK
            if deadline is not None and time.monotonic() >= deadline:
                print(as_typed(f"{run_ids(running)} still running; collect the next with `ar wait --any --wait 540`"))
                return EXIT_RUNNING
            time.sleep(POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS, deadline - time.monotonic())))
    except KeyboardInterrupt:
        print(as_typed("detached; the runs go on (interrupt them with `ar stop --all`)"))
        return EXIT_RUNNING


def _next_finished(paths: ExperimentPaths, session: Session) -> dict | None:
    """The result of the oldest finished run not reported yet (a series counts once, at its
    last run), moving the offset past it. Books lock held."""
    from ar.noise import follow_up

    try:
        size = paths.results.stat().st_size
    except FileNotFoundError:
        return None
    offset = known = reported_offset(paths)
    if offset is None or offset > size:  # never reported, or the log was rebuilt: from its last row
        offset = _last_row_offset(paths, size)
    if offset == size:
        return None
    with open(paths.results, "rb") as f:
        f.seek(offset)
        pending = f.read(size - offset)
    found = None
    for raw in pending.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break
        offset += len(raw)
        run_id = raw.split(b"\t", 1)[0].decode(errors="replace")
        result = read_json_or_none(paths.run(run_id).result) if run_number(run_id) is not None else None
        series = (result.get("group") or {}).get("of", run_id) if isinstance(result, dict) else run_id
        if (isinstance(result, dict) and result.get("run_id") == run_id and not paths.run(series).shown.exists()
                and follow_up(result, session.loop.baseline_repeats) is None):
            found = result
            break
    if offset != known:
        set_reported(paths, offset)
    return found


def _last_row_offset(paths: ExperimentPaths, size: int) -> int:
    with open(paths.results, "rb") as f:
        f.seek(max(0, size - 65536))
        tail = f.read()
    cut = tail.rstrip(b"\n").rfind(b"\n")
    return size - len(tail) + cut + 1 if cut >= 0 else size


def stop_command(expr: str | None, all_runs: bool = False) -> int:
    paths = resolve_experiment(expr)
    with books(paths):
        repair(paths)
        running = in_flight(paths)
        if len(running) > 1 and not all_runs:
            raise ArError(f"{len(running)} runs are in flight ({run_ids([r for _, r in running])})", "interrupt them all with `ar stop --all`")
        from ar.iteration import drop_queue

        dropped = drop_queue(paths)  # never started: nothing to interrupt or record
    if not running:
        print(f"dropped {' '.join(dropped)} from the queue" if dropped else "no run is in progress")
        return EXIT_OK
    for index, record in running:
        if record is not None:  # (without one, its supervisor is between runs: with the queue gone, it stops)
            os.kill(_supervisor_pid(paths, index), signal.SIGTERM)  # the supervisor turns this into an interrupt
    for index, _ in running:
        with IterationLock(paths.slot_lock(index)) as lock:
            if not lock.acquire(STOP_TIMEOUT):
                raise busy_error(paths)
    if dropped:
        print(f"dropped {' '.join(dropped)} from the queue")
    with books(paths):
        if len(running) == 1:
            _print_result(paths, (running[0][1] or {}).get("run_id"))
        else:
            repair(paths)
            for _, record in running:
                result = read_json_or_none(paths.run(record["run_id"]).result) if record else None
                if isinstance(result, dict):
                    print(lines.verdict(paths, result))
    return EXIT_OK  # the stop worked; the runs' own verdicts are in the lines


def _supervisor_pid(paths: ExperimentPaths, slot: int = 0) -> int:
    deadline = time.monotonic() + 5
    while True:  # a run that is just starting writes its record within milliseconds
        active = active_run(paths, slot)
        if isinstance(active, dict) and isinstance(active.get("pid"), int):
            return active["pid"]
        if time.monotonic() > deadline:
            raise ArError("the running iteration has not recorded its process id", "try `ar stop` again in a moment")
        time.sleep(0.05)


def _running(paths: ExperimentPaths, lock: IterationLock) -> tuple[bool, str | None]:
    """Whether a run is in progress on slot 1, and its id when already recorded; when not, we hold the lock."""
    if lock.try_acquire():
        return False, None
    try:
        return True, read_json(paths.active, "")["run_id"]
    except (ArError, KeyError, TypeError):
        return True, None  # its owner has not written .ar-active.json yet


def _print_result(paths: ExperimentPaths, run_id: str | None) -> int:
    """Books lock held: repair first (the owner may have died), then print the run's lines."""
    repair(paths)
    if run_id is None:
        last = load_state(paths).last_run
        if last == 0:
            raise ArError(f"experiment '{paths.slug}' has no runs yet", "start one with `ar run`")
        run_id = format_run_id(last)
    result = read_json(paths.run(run_id).result, "run `ar status` to repair the experiment")
    last = read_json_or_none(paths.run(format_run_id(load_state(paths).last_run)).result)
    if isinstance(last, dict) and (last.get("group") or {}).get("of") == run_id:
        result = last  # the baseline's repeats ran in the same `ar run`: its lines are the series' last
    for line in lines.all_lines(paths, result, run_seconds(paths, load_session(paths))):
        print(line)
    return lines.exit_code(result)
