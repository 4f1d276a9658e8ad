"""`ar tail`: the end of a run's log, focused on its last traceback (hard-capped)."""

from __future__ import annotations

from ar.durable import read_json_or_none
from ar.errors import ArError
from ar.experiments import resolve_experiment
from ar.layout import format_run_id, parse_run_id
from ar.state import load_state
from ar.tailback import log_tail


def tail_command(expr: str | None, run_id: str | None, lines: int) -> int:
    paths = resolve_experiment(expr)
    if run_id is None:
        active = read_json_or_none(paths.active)
        last = load_state(paths).last_run
        if isinstance(active, dict) and isinstance(active.get("run_id"), str):
            run_id = active["run_id"]
        elif last:
            run_id = format_run_id(last)
        else:
            raise ArError(f"experiment '{paths.slug}' has no runs yet", "start one with `ar run`")
    run = paths.run(format_run_id(parse_run_id(run_id)))
    if not run.dir.exists():
        raise ArError(f"no run {run_id} in '{paths.slug}'", "list runs with `ar status --last 10`")
    print("\n".join(log_tail(run.log, lines)) or f"({paths.relative(run.log)} is empty)")
    return 0
