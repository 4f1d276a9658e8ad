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


def is_better(value: float, best: float | None, direction: str) -> bool:
    if best is None:
        return True  # the first valid run establishes the best regardless of its value
    return value < best if direction == "min" else value > best


def decide(run_status: str, primary: float | None, best: float | None, direction: str, constraints_hold: bool) -> Decision:
    """run_status is the watchdog's: ok | crash | timeout | interrupted | unclean."""
    if run_status != "ok":
        return Decision(run_status, _VERDICT_OF_FAILURE[run_status], False, False)
    if primary is None or not math.isfinite(primary):
        return Decision("invalid", "revert", False, False)
    improved = is_better(primary, best, direction)
    valid = constraints_hold
    return Decision("ok", "advance" if valid and improved else "revert", valid, improved)
