"""How much a train.py changes against the one it started from, and how big it is (pure).

`+added -removed` lines:

A replaced line counts once on each side; "changed lines", the mutation budget's measure, is the
larger side, so a one-line edit changes 1 line and a 10-line insertion changes 10.
"""

from __future__ import annotations

import difflib


def diff_size(before: str, after: str) -> tuple[int, int]:
    """(lines added, lines removed) from `before` to `after`."""
    added = removed = 0
    matcher = difflib.SequenceMatcher(None, before.splitlines(), after.splitlines(), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            removed += i2 - i1
            added += j2 - j1
    return added, removed


def code_lines(source: str) -> int:
    """The size `--prefer-simpler` compares: lines that are neither blank nor only a comment."""
    return sum(1 for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def changed_lines(size: tuple[int, int]) -> int:
    return max(size)


def shown(size: tuple[int, int]) -> str:
    return f"+{size[0]} -{size[1]}"
