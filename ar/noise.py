"""Noise and series (pure), SPEC §11: the spread of the baseline's metric over seeds, the noise
floor a gain must clear once that spread is known, and the verdicts within a series (baseline
repeats, a candidate's confirmations)."""

from __future__ import annotations

import math
import statistics
from typing import NamedTuple

from ar.verdict import Decision, gain, is_better


def spread(values: list[float]) -> float | None:
    """The sample standard deviation; None below two values."""
    return statistics.stdev(values) if len(values) >= 2 else None


def min_gain(min_delta: float, noise_k: float, sigma: float | None) -> float:
    """The absolute part of the noise floor: `max(min_delta, k * sigma)` once sigma is known."""
    if sigma is None or not math.isfinite(sigma):
        return min_delta
    return max(min_delta, noise_k * sigma)


def follow_up(result: dict, repeats: int) -> dict | None:
    """The series entry of the run that follows at once, or None: the first run that set a best
    starts R - 1 repeats of the baseline; a candidate starts its confirmations. A run that did not
    count (a crash, an invalid metric) ends its series, and so does termination."""
    group = result.get("group")
    if result["should_terminate"] or not result["valid"] or result["status"] != "ok":
        return None
    if group is None:
        first = result["verdict"] == "advance" and result["previous_best"] is None and repeats > 1
        return {"kind": "repeat", "of": result["run_id"], "index": 2, "size": repeats} if first else None
    if group["kind"] == "repeat" and result["verdict"] != "advance":
        return None
    return {**group, "index": group["index"] + 1} if group["index"] < group["size"] else None


class Series(NamedTuple):
    decision: Decision
    group: dict | None  # the run's series, a candidate's new one included
    values: list[float]  # the runs the best's value is the mean of, should the run advance
    noise: dict | None  # {"sigma", "n"} the best carries
    reason: str | None


def judge_series(decision: Decision, group: dict | None, earlier: list[float], primary: float | None, best: float | None,
                 direction: str, min_delta: float, min_rel_delta: float, confirm: int, noise: dict | None, run_id: str) -> Series:
    """The verdict of a run within its series. `earlier`: the valid values of the series' runs before
    this one. A repeat of the baseline advances (the same code: the best becomes the mean); an
    apparent gain with `confirm` on is a candidate (reverted, a series starts); the last confirmation
    advances only if the mean of the series beats the best by the floor."""
    usable = decision.status == "ok" and decision.valid
    if group is not None and group["kind"] == "repeat" and usable:
        values = [*earlier, primary]
        sigma = spread(values)
        noise = {"sigma": sigma, "n": len(values)} if sigma is not None else noise
        return Series(Decision("ok", "advance", True, False), group, values, noise, f"baseline repeat {group['index']}/{group['size']}")
    if group is None and confirm and best is not None and decision.verdict == "advance" and decision.improved:
        group = {"kind": "confirm", "of": run_id, "index": 1, "size": confirm + 1}
        return Series(decision._replace(verdict="revert"), group, [primary], noise,
                      f"apparent gain {gain(primary, best, direction):.4g}: confirming with {confirm} more runs")
    if group is not None and group["kind"] == "confirm" and usable:
        done = f"{group['index'] - 1}/{group['size'] - 1}"
        if group["index"] < group["size"]:
            return Series(decision._replace(verdict="revert"), group, [primary], noise, f"confirming {group['of']}: {done}")
        values = [*earlier, primary]
        mean = sum(values) / len(values)
        confirmed = len(values) == group["size"] and is_better(mean, best, direction, min_delta, min_rel_delta)
        if confirmed:
            return Series(Decision("ok", "advance", True, True), group, values, noise, f"confirmed {done}: mean {mean:.6g} vs best {best:.6g}")
        return Series(Decision("ok", "revert", True, False), group, [primary], noise, f"not confirmed: mean {mean:.6g} vs best {best:.6g}")
    return Series(decision, group, [primary], noise, None)
