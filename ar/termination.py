"""When the loop stops (pure): SPEC §5.4."""

from __future__ import annotations

from typing import NamedTuple


class Limits(NamedTuple):
    direction: str
    max_runs: int | None = None
    plateau: int | None = None
    threshold: float | None = None
    max_failures: int | None = 5


class Counters(NamedTuple):
    runs: int
    scored_since_best: int  # ok runs since the last advance
    consecutive_failures: int  # crash / timeout / invalid in a row
    best: float | None
    manual_stop: bool


def terminated_by(limits: Limits, c: Counters) -> str | None:
    if c.manual_stop:
        return "manual"
    if limits.threshold is not None and c.best is not None:
        reached = c.best <= limits.threshold if limits.direction == "min" else c.best >= limits.threshold
        if reached:
            return "primary_threshold"
    if limits.plateau is not None and c.scored_since_best >= limits.plateau:
        return "plateau"
    if limits.max_runs is not None and c.runs >= limits.max_runs:
        return "max_runs"
    if limits.max_failures is not None and c.consecutive_failures >= limits.max_failures:
        return "consecutive_failures"
    return None


# Limits after which the agent would move on to a follow-up experiment. `manual` (the user
# interrupted: resume) and `consecutive_failures` (a broken environment: fix it) keep their own
# names, since what they ask for is not a new link.
CHAIN_ENDING = frozenset({"primary_threshold", "plateau", "max_runs"})


def with_chain(stop: str | None, chain_mode: str, chain_remaining: int | None) -> str | None:
    """`chain_budget` when the experiment ended by one of its limits while chain mode is on and
    no follow-up experiment is left (the whole chain is done); otherwise `stop` unchanged."""
    if stop in CHAIN_ENDING and chain_mode == "max_n" and chain_remaining is not None and chain_remaining <= 0:
        return "chain_budget"
    return stop


def progress(limits: Limits, c: Counters) -> str:
    """e.g. 'max_runs 12/50, plateau 3/5, failures 0/5' — only the limits that are set."""
    parts = []
    if limits.max_runs is not None:
        parts.append(f"max_runs {c.runs}/{limits.max_runs}")
    if limits.plateau is not None:
        parts.append(f"plateau {c.scored_since_best}/{limits.plateau}")
    if limits.threshold is not None:
        parts.append(f"target {'<=' if limits.direction == 'min' else '>='}{limits.threshold:g}")
    if limits.max_failures is not None:
        parts.append(f"failures {c.consecutive_failures}/{limits.max_failures}")
    return ", ".join(parts) or "no limits"
