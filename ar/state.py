"""The loop's counters after the last finished run (.ar-state.json).

Kept so that `ar status` and termination cost O(1) whatever the history; derivable from
results.tsv, and rebuilt from it when missing or damaged.
"""

from __future__ import annotations

from typing import NamedTuple

from ar import results_log
from ar.durable import read_json_or_none, write_json_atomic
from ar.layout import ExperimentPaths, parse_run_id
from ar.termination import Counters

FAILURE_STATUSES = frozenset({"crash", "timeout", "invalid", "unclean"})


class LoopState(NamedTuple):
    last_run: int = 0  # number of the run of the last row of results.tsv (rows are in finish order)
    runs: int = 0
    counts: dict = {}  # verdict -> runs; never mutated in place (after_run copies)
    scored_since_best: int = 0
    consecutive_failures: int = 0
    manual_stop: bool = False  # set by an interrupted run, cleared by `ar session --resume`
    baseline: dict | None = None  # {"run_id", "value"} of the first run that advanced
    # Size of results.tsv when these counters were saved: a different size means the log was
    # edited (or a row appended since), and repair checks it against the runs' result.json.
    results_bytes: int | None = None
    # The highest run number with a row: with slots, runs finish out of order (None: counters of
    # an older version, when runs always finished in order, so last_run is the highest).
    top_run: int | None = None

    @property
    def highest(self) -> int:
        return max(self.last_run, self.top_run or 0)

    def counters(self, best_value: float | None) -> Counters:
        return Counters(self.runs, self.scored_since_best, self.consecutive_failures, best_value, self.manual_stop)


def after_run(state: LoopState, run_id: str, status: str, verdict: str, value: float | None) -> LoopState:
    counts = dict(state.counts)
    counts[verdict] = counts.get(verdict, 0) + 1
    scored = state.scored_since_best
    if verdict == "advance":
        scored = 0
    elif status == "ok":
        scored += 1
    baseline = state.baseline
    if baseline is None and verdict == "advance":
        baseline = {"run_id": run_id, "value": value}
    number = parse_run_id(run_id)
    return LoopState(
        last_run=number,
        top_run=max(state.highest, number),
        runs=state.runs + 1,
        counts=counts,
        scored_since_best=scored,
        consecutive_failures=state.consecutive_failures + 1 if status in FAILURE_STATUSES else 0,
        manual_stop=state.manual_stop or status == "interrupted",
        baseline=baseline,
    )


def load_state(paths: ExperimentPaths) -> LoopState:
    return stored_state(paths) or rebuild_state(paths)


def stored_state(paths: ExperimentPaths) -> LoopState | None:
    """The saved counters; None when missing, not JSON, or of the wrong shape (then rebuilt)."""
    data = read_json_or_none(paths.state)
    if not isinstance(data, dict):
        return None
    try:
        state = LoopState(**{k: v for k, v in data.items() if k in _FIELDS})
    except TypeError:
        return None
    numbers = (state.last_run, state.runs, state.scored_since_best, state.consecutive_failures)
    if not all(type(n) is int and n >= 0 for n in numbers) or not isinstance(state.counts, dict):
        return None
    if not isinstance(state.manual_stop, bool) or not isinstance(state.baseline, (dict, type(None))):
        return None
    if state.results_bytes is not None and type(state.results_bytes) is not int:
        return None
    if state.top_run is not None and type(state.top_run) is not int:
        return None
    return state


def save_state(paths: ExperimentPaths, state: LoopState) -> None:
    """Saved only when results.tsv holds exactly the rows counted: it is sealed with its size."""
    write_json_atomic(paths.state, state._replace(results_bytes=results_size(paths))._asdict())


def results_size(paths: ExperimentPaths) -> int | None:
    try:
        return paths.results.stat().st_size
    except FileNotFoundError:
        return None


def rebuild_state(paths: ExperimentPaths) -> LoopState:
    state = LoopState()
    for row in results_log.iter_rows(paths.results):
        state = after_run(state, row["run_id"], row["status"], row["verdict"], row["value"])
    return state._replace(manual_stop=False)


_FIELDS = set(LoopState._fields)
