"""`ar wait` and `ar stop`: re-attach to, or interrupt, the iteration another process owns."""

from __future__ import annotations

import os
import signal
import time

from ar import lines
from ar.durable import read_json, read_json_or_none
from ar.errors import EXIT_OK, EXIT_RUNNING, ArError, as_typed
from ar.experiments import resolve_experiment
from ar.active import busy_error
from ar.repair import repair
from ar.layout import ExperimentPaths, format_run_id
from ar.lock import IterationLock
from ar.settings import load_session
from ar.time_limit import run_seconds
from ar.state import load_state

STOP_TIMEOUT = 120  # the watchdog's grace (30 s at most) plus time to record the run


def wait_command(expr: str | None, wait: float | None) -> int:
    paths = resolve_experiment(expr)
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
        return _print_result(paths, run_id)


def stop_command(expr: str | None) -> int:
    paths = resolve_experiment(expr)
    with IterationLock(paths.lock) as lock:
        running, run_id = _running(paths, lock)
        if not running:
            print("no run is in progress")
            return EXIT_OK
        os.kill(_supervisor_pid(paths), signal.SIGTERM)  # the supervisor turns this into an interrupt
        if not lock.acquire(STOP_TIMEOUT):
            raise busy_error(paths)
        _print_result(paths, run_id)
        return EXIT_OK  # the stop worked; the run's own verdict is in the lines


def _supervisor_pid(paths: ExperimentPaths) -> int:
    deadline = time.monotonic() + 5
    while True:  # a run that is just starting writes .ar-active.json within milliseconds
        active = read_json_or_none(paths.active)
        if isinstance(active, dict) and isinstance(active.get("pid"), int):
            return active["pid"]
        if time.monotonic() > deadline:
            raise ArError("the running iteration has not recorded its process id", "try `ar stop` again in a moment")
        time.sleep(0.05)


def _running(paths: ExperimentPaths, lock: IterationLock) -> tuple[bool, str | None]:
    """Whether a run is in progress, and its id when already recorded; when not, we hold the lock."""
    if lock.try_acquire():
        return False, None
    try:
        return True, read_json(paths.active, "")["run_id"]
    except (ArError, KeyError, TypeError):
        return True, None  # its owner has not written .ar-active.json yet


def _print_result(paths: ExperimentPaths, run_id: str | None) -> int:
    """Caller holds the lock: repair first (the owner may have died), then print the run's lines."""
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
