"""The record of the iteration in progress (.ar-active.json), written by its owner."""

from __future__ import annotations

from ar.durable import read_json_or_none
from ar.errors import EXIT_BUSY, ArError
from ar.layout import ExperimentPaths


def active_run(paths: ExperimentPaths) -> dict | None:
    active = read_json_or_none(paths.active)
    return active if isinstance(active, dict) and "run_id" in active else None


def busy_error(paths: ExperimentPaths) -> ArError:
    active = active_run(paths)
    what = f"run {active['run_id']} (pid {active['pid']}, started {active['started_at']})" if active else "another iteration"
    return ArError(f"{what} of '{paths.slug}' is still running", "re-attach with `ar wait`, or interrupt it with `ar stop`", EXIT_BUSY)


