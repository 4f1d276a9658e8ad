"""The records of the runs in progress, one per slot (.ar-active.json for slot 1,
.ar-slot-N.json for the others), each written by the run's owner.

A record names the owning process by pid and start time, so a live run is recognised even when
its slot's lock file is gone (deleted by hand): the flock alone cannot say who holds a file
nobody can open.
"""

from __future__ import annotations

import os
import re

from ar.durable import read_json_or_none, write_json_atomic
from ar.errors import EXIT_BUSY, ArError
from ar.layout import ExperimentPaths

_SLOT_FILE = re.compile(r"\.ar-slot-(\d+)\.(?:json|lock)")


def active_run(paths: ExperimentPaths, slot: int = 0) -> dict | None:
    active = read_json_or_none(paths.slot_record(slot))
    return active if isinstance(active, dict) and "run_id" in active else None


def recorded_slots(paths: ExperimentPaths) -> list[int]:
    """Slots that were ever used: with a lock or a record file (slot 0 always)."""
    slots = {0}
    try:
        names = os.listdir(paths.dir)
    except OSError:
        return [0]
    for name in names:
        match = _SLOT_FILE.fullmatch(name)
        if match and int(match.group(1)) > 1:
            slots.add(int(match.group(1)) - 1)
    return sorted(slots)


def busy_error(paths: ExperimentPaths, running: list[dict] | None = None, idle: bool = False) -> ArError:
    """`idle`: the command needs every run finished, not just a free slot."""
    from ar.slots import in_flight

    running = [record for _, record in in_flight(paths)] if running is None else running
    if len(running) > 1:
        ids = run_ids(running)
        if idle:
            return ArError(f"{len(running)} runs of '{paths.slug}' are in flight ({ids}); this needs them finished",
                           "collect them with `ar wait --any --wait 540` until none is left, or interrupt them with `ar stop --all`", EXIT_BUSY)
        return ArError(f"{len(running)} runs of '{paths.slug}' are in flight ({ids}) and every slot is busy",
                       "collect one with `ar wait --any --wait 540`, or interrupt them with `ar stop --all`", EXIT_BUSY)
    active = running[0] if running else None
    if active and "pid" in active:
        what = f"run {active['run_id']} (pid {active['pid']}, started {active.get('started_at')})"
    else:
        what = f"run {active['run_id']}" if active and "run_id" in active else "another iteration"
    return ArError(f"{what} of '{paths.slug}' is still running", "re-attach with `ar wait --wait 540`, or interrupt it with `ar stop`", EXIT_BUSY)


def run_ids(records: list[dict | None], shown: int = 6) -> str:
    """'r0041 r0042 ... +3 more': the runs a line names, capped (64 slots make no long line)."""
    ids = [str((r or {}).get("run_id", "?")) for r in records]
    return " ".join(ids[:shown]) + (f" +{len(ids) - shown} more" if len(ids) > shown else "")


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


def record_owner(paths: ExperimentPaths, run_id: str, slot: int = 0, **extra: object) -> None:
    """Name this process as the owner of run_id on `slot` (the caller first, then the supervisor)."""
    me = os.getpid()
    # a machine that crashes takes its processes along: no fsync needed
    write_json_atomic(paths.slot_record(slot), {"run_id": run_id, "slot": slot, **extra, "owner_pid": me, "owner_start": process_start(me)}, sync=False)


def live_owner(paths: ExperimentPaths, slot: int = 0) -> bool:
    """Whether the process the slot's record names still runs (the same process: its start time
    agrees). This process counts too: a supervisor whose lock file was deleted and made anew
    must not take its own run for an orphan."""
    active = active_run(paths, slot)
    if active is None or not isinstance(active.get("owner_pid"), int):
        return False
    start = process_start(active["owner_pid"])
    return start is not None and start == active.get("owner_start")
