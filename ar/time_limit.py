"""A run's time limit: the session's `--seconds`, or with `--seconds auto` twice the baseline's
measured wall time (the seed loop protocol's "kill at 2x normal time"), never above the cap."""

from __future__ import annotations

import math

from ar.durable import read_json_or_none
from ar.layout import ExperimentPaths
from ar.settings import Session
from ar.state import load_state

AUTO_FACTOR = 2


def auto_seconds(baseline_wall: float | None, cap: int) -> int:
    """The cap until the baseline has run; then AUTO_FACTOR times its wall time, at least 1 s."""
    if baseline_wall is None or not math.isfinite(baseline_wall):
        return cap
    return min(cap, max(1, math.ceil(AUTO_FACTOR * baseline_wall)))


def run_seconds(paths: ExperimentPaths, session: Session) -> int:
    if not session.loop.seconds_auto:
        return session.loop.seconds
    return auto_seconds(baseline_wall(paths), session.loop.seconds)


def baseline_wall(paths: ExperimentPaths) -> float | None:
    baseline = load_state(paths).baseline
    result = read_json_or_none(paths.run(baseline["run_id"]).result) if baseline else None
    wall = result.get("wall_seconds") if isinstance(result, dict) else None
    return float(wall) if isinstance(wall, (int, float)) else None
