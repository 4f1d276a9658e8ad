"""Status and verdict of a finished run (pure): SPEC §5.1, exactly these pairs."""

from __future__ import annotations

import math
from typing import NamedTuple

# (status, verdict, train.py afterwards) — the docs' table is checked against this.
VERDICT_TABLE = (
    ("ok", "advance", "kept; best.json updated"),
    ("ok", "revert", "restored to best"),
    ("invalid", "revert", "restored"),
    ("crash", "crash", "restored"),
    ("timeout", "timeout", "restored"),
    ("interrupted", "interrupted", "restored"),
    ("unclean", "crash", "restored"),
)
_VERDICT_OF_FAILURE = {status: verdict for status, verdict, _ in VERDICT_TABLE if status not in ("ok", "invalid")}


class Decision(NamedTuple):
    status: str
    verdict: str
    valid: bool  # metric usable and every hard constraint holds
    improved: bool  # better than the best before this run (or no best yet)


def gain(value: float, best: float, direction: str) -> float:
    return best - value if direction == "min" else value - best


def noise_floor(best: float, min_delta: float, min_rel_delta: float) -> float:
    return max(min_delta, min_rel_delta * abs(best))


def is_better(value: float, best: float | None, direction: str, min_delta: float = 0.0, min_rel_delta: float = 0.0) -> bool:
    """Better by more than the noise floor (by default: strictly better)."""
    if best is None:
        return True  # the first valid run establishes the best regardless of its value
    return gain(value, best, direction) > noise_floor(best, min_delta, min_rel_delta)


def decide(
    run_status: str,
    primary: float | None,
    best: float | None,
    direction: str,
    constraints_hold: bool,
    min_delta: float = 0.0,
    min_rel_delta: float = 0.0,
    constraint_unmeasured: bool = False,
    simpler: bool = False,
) -> Decision:
    """run_status is the watchdog's: ok | crash | timeout | interrupted | unclean.
    constraint_unmeasured: a hard constraint names a metric the run never produced; that run is
    invalid (a failure the breaker counts), so a limit nobody measures cannot block silently.
    simpler: `--prefer-simpler` is on and this train.py is smaller than the best's; then a run
    within the noise floor of the best (not worse by more than it) advances too."""
    if run_status != "ok":
        return Decision(run_status, _VERDICT_OF_FAILURE[run_status], False, False)
    if primary is None or not math.isfinite(primary) or constraint_unmeasured:
        return Decision("invalid", "revert", False, False)
    improved = is_better(primary, best, direction, min_delta, min_rel_delta)
    valid = constraints_hold
    equal = best is not None and -gain(primary, best, direction) <= noise_floor(best, min_delta, min_rel_delta)
    return Decision("ok", "advance" if valid and (improved or (simpler and equal)) else "revert", valid, improved)
