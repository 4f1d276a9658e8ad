"""Noise measured from repeats of the baseline (pure): the spread of its metric over seeds, and
the noise floor a gain must clear once that spread is known (SPEC §11)."""

from __future__ import annotations

import math
import statistics


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
