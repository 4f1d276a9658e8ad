"""Hard constraints `name op value` on any metric: parsing and checking (pure)."""

from __future__ import annotations

import math
import operator
import re
from typing import NamedTuple

from ar.errors import ArError

OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
_CONSTRAINT_RE = re.compile(r"\s*(?P<name>[^<>=\s](?:[^<>=]*[^<>=\s])?)\s*(?P<op><=|>=|<|>)\s*(?P<value>\S+)\s*")


class Constraint(NamedTuple):
    name: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.threshold:g}"


def parse_constraint(text: str) -> Constraint:
    match = _CONSTRAINT_RE.fullmatch(text)
    threshold = _finite(match.group("value")) if match else None
    if match is None or threshold is None:
        raise ArError(
            f"constraint {text!r} is not of the form name<=value",
            "write e.g. --constraints 'peak_mem_gb<=20' (ops: <=, <, >=, >; a finite number)",
        )
    return Constraint(match.group("name"), match.group("op"), threshold)


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def check_constraints(constraints: list[Constraint], metrics: dict[str, float]) -> list[dict]:
    """One entry per constraint; a metric that never appeared (or is NaN) fails it."""
    checked = []
    for c in constraints:
        value = metrics.get(c.name)
        usable = value is not None and math.isfinite(value)
        checked.append(
            {
                "name": c.name,
                "op": c.op,
                "threshold": c.threshold,
                "value": value if usable else None,
                "passed": bool(usable and OPS[c.op](value, c.threshold)),
            }
        )
    return checked
