"""The record of the iteration in progress (.ar-active.json), written by its owner.

It names the owning process by pid and start time, so a live run is recognised even when the
lock file is gone (deleted by hand): the flock alone cannot say who holds a file nobody can open.
"""

from __future__ import annotations

import os

from ar.durable import read_json_or_none, write_json_atomic
from ar.errors import EXIT_BUSY, ArError
from ar.layout import ExperimentPaths


def active_run(paths: ExperimentPaths) -> dict | None:
    active = read_json_or_none(paths.active)
    return active if isinstance(active, dict) and "run_id" in active else None


def busy_error(paths: ExperimentPaths) -> ArError:
    active = active_run(paths)
    if active and "pid" in active:
        what = f"run {active['run_id']} (pid {active['pid']}, started {active.get('started_at')})"
    else:
        what = f"run {active['run_id']}" if active else "another iteration"
    return ArError(f"{what} of '{paths.slug}' is still running", "re-attach with `ar wait --wait 540`, or interrupt it with `ar stop`", EXIT_BUSY)


def process_start(pid: int) -> int | None:
    """The start time of a live process (clock ticks since boot); None if gone or a zombie.
    (ar.watchdog reads the same field; importing it here would cost every command.)"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return None if fields[0] == b"Z" else int(fields[19])


def record_owner(paths: ExperimentPaths, run_id: str, **extra: object) -> None:
    """Name this process as the owner of run_id (the caller first, then the supervisor)."""
    me = os.getpid()
    # a machine that crashes takes its processes along: no fsync needed
    write_json_atomic(paths.active, {"run_id": run_id, **extra, "owner_pid": me, "owner_start": process_start(me)}, sync=False)


def live_owner(paths: ExperimentPaths) -> bool:
    """Whether the process the record names still runs (the same process: its start time agrees)."""
    active = active_run(paths)
    if active is None or not isinstance(active.get("owner_pid"), int) or active["owner_pid"] == os.getpid():
        return False
    start = process_start(active["owner_pid"])
    return start is not None and start == active.get("owner_start")
