"""`ar run` and `ar submit`: one iteration, followed or not (the steps are in ar/iteration.py)."""

from __future__ import annotations

from ar.errors import ArError
from ar.experiments import resolve_experiment
from ar.iteration import run_iteration
from ar.settings import MAX_SECONDS


def run_command(expr: str | None, seconds: int | None, wait: float | None, settings: list[str], note: str | None, submit: bool = False) -> int:
    if seconds is not None and not 1 <= seconds <= MAX_SECONDS:
        raise ArError(f"--seconds {seconds} is out of range", f"give 1 to {MAX_SECONDS} seconds")
    if wait is not None and wait < 0:
        raise ArError(f"--wait {wait} is negative", "give the seconds to wait before returning, e.g. --wait 540")
    knobs = None
    if settings or note is not None:
        from ar.knobs import parse_settings

        knobs = (parse_settings(settings), note)  # checked before anything is touched
    if submit:
        from ar.iteration import submit_iteration

        return submit_iteration(resolve_experiment(expr), seconds, knobs)
    return run_iteration(resolve_experiment(expr), seconds, wait, knobs)
