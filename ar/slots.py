"""Slots: up to `--slots N` runs in flight at once (SPEC §10).

Each run in flight holds its slot's flock for its whole life (its supervisor inherits it, as
`ar run`'s iteration lock always was); the kernel frees the slot however the supervisor dies.
Everything that writes the books (new runs, results rows, best, counters) holds the short books
lock instead, and starts by repairing, so at most one recording is ever left half done and it
is the last one. Runs submitted while every slot is busy wait in a bounded queue; a supervisor
that finishes its run starts the next one there.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

from ar.active import active_run, live_owner, recorded_slots
from ar.durable import read_json_or_none, write_json_atomic
from ar.errors import ArError
from ar.layout import RUN_ID_RE, ExperimentPaths
from ar.lock import IterationLock

BOOKS_TIMEOUT = 120  # a recording holds the books for well under a second; a checkpoint swap a little longer


class Claimed(NamedTuple):
    index: int
    lock: IterationLock  # held: handed to the run's supervisor


def slot_busy(paths: ExperimentPaths, index: int) -> bool:
    """Whether a live process holds the slot: its lock is taken, or its record's owner lives
    (the lock file was deleted under a live run)."""
    with IterationLock(paths.slot_lock(index)) as lock:
        if not lock.try_acquire():
            return True
    return live_owner(paths, index)


def in_flight(paths: ExperimentPaths) -> list[tuple[int, dict | None]]:
    """(slot, record) of every busy slot; the record is None while its owner has not written it."""
    return [(index, active_run(paths, index)) for index in recorded_slots(paths) if slot_busy(paths, index)]


def needs_adoption(paths: ExperimentPaths) -> bool:
    """Whether work may be waiting for a supervisor: queued runs, or a record whose slot is free
    (its supervisor died). Cheap: a stat and a flock try per slot ever used."""
    return paths.queue.exists() or any(active_run(paths, index) and not slot_busy(paths, index) for index in recorded_slots(paths))


def claim(paths: ExperimentPaths, slots: int, only: int | None = None) -> Claimed | None:
    """Take the first free slot of `slots` (or slot `only`), or None when all are busy. After a
    repair a free slot has no record, except one whose dead supervisor left a Slurm job running:
    that slot is the job's, taken over only by `ar.iteration.adopt` (with `only`)."""
    for index in [only] if only is not None else range(slots):
        lock = IterationLock(paths.slot_lock(index))
        if lock.try_acquire() and not live_owner(paths, index) and (only is not None or active_run(paths, index) is None):
            return Claimed(index, lock)
        lock.close()
    return None


@contextmanager
def books(paths: ExperimentPaths):
    """Hold the experiment's books lock (blocking: every holder is brief)."""
    with IterationLock(paths.books_lock) as lock:
        if not lock.acquire(BOOKS_TIMEOUT):
            raise ArError(f"another ar process has held the books of '{paths.slug}' for over {BOOKS_TIMEOUT}s",
                          f"try again; if it persists, an ar process is stuck: `fuser -v {paths.relative(paths.books_lock)}` names it")
        yield


# The queue: runs waiting for a slot, oldest first, as {"run_id", "seconds"}. An entry is
# written before its run directory, and leaves the queue after a slot's record names it.

def queued_entries(paths: ExperimentPaths) -> list[dict]:
    """Entries whose run exists (snapshot taken) and was not recorded meanwhile."""
    data = read_json_or_none(paths.queue)
    entries = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("run_id"), str) and isinstance(e.get("seconds"), int)
            and RUN_ID_RE.fullmatch(e["run_id"]) and paths.run(e["run_id"]).train_py.exists() and not paths.run(e["run_id"]).result.exists()]


def queued(paths: ExperimentPaths) -> list[str]:
    return [entry["run_id"] for entry in queued_entries(paths)]


def set_queue(paths: ExperimentPaths, entries: list[dict]) -> None:
    if entries:
        write_json_atomic(paths.queue, {"runs": entries})
    else:
        paths.queue.unlink(missing_ok=True)


# What `ar wait --any` has reported: a byte offset into results.tsv, whose rows are in finish order.

def reported_offset(paths: ExperimentPaths) -> int | None:
    data = read_json_or_none(paths.reported)
    offset = data.get("offset") if isinstance(data, dict) else None
    return offset if type(offset) is int and offset >= 0 else None


def set_reported(paths: ExperimentPaths, offset: int) -> None:
    write_json_atomic(paths.reported, {"offset": offset}, sync=False)


def start_reporting(paths: ExperimentPaths) -> None:
    """From the first submit on, `ar wait --any` reports every run that finishes."""
    if reported_offset(paths) is None:
        try:
            set_reported(paths, paths.results.stat().st_size)
        except FileNotFoundError:
            set_reported(paths, 0)


def gpu_devices(slot: int, per_slot: int, visible: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES of a slot: its share of the devices visible to ar (all of them,
    by index, when nothing restricts them), `per_slot` each; more slots than devices share them."""
    pool = [d.strip() for d in visible.split(",") if d.strip()] if visible else None
    wanted = range(slot * per_slot, (slot + 1) * per_slot)
    return ",".join(pool[i % len(pool)] for i in wanted) if pool else ",".join(map(str, wanted))


@contextmanager
def idle_books(paths: ExperimentPaths):
    """The books lock, with no run in flight or waiting, for what must not move under a run
    (a resume, copying the best for a chain, a smoke check); repaired first."""
    from ar.active import busy_error
    from ar.repair import repair

    with books(paths):
        repair(paths)
        running = in_flight(paths)
        if running:
            raise busy_error(paths, [record for _, record in running], idle=True)
        if queued(paths):
            raise ArError(f"runs of '{paths.slug}' wait in the queue ({' '.join(queued(paths))})",
                          "collect them with `ar wait --any --wait 540`, or drop them with `ar stop --all`")
        yield
