"""results.tsv: header + exactly one row per run, append-only (SPEC §5.8).

Reads go from the end of the file, so `ar status --last N` costs the same at 10 runs or 100,000.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

from ar.durable import append_line
from ar.layout import run_number

COLUMNS = ("run_id", "started_at", "wall_s", "status", "verdict", "metric", "value", "valid", "improved", "note", "diff")
HEADER = "\t".join(COLUMNS)
_BACK_CHUNK = 16384


def _cell(text: str) -> str:
    return " ".join(str(text).split())  # tabs and newlines would break the row


def format_row(result: dict) -> str:
    value = result["primary"]["value"]
    cells = (
        result["run_id"],
        result["started_at"],
        f"{result['wall_seconds']:.2f}",
        result["status"],
        result["verdict"],
        _cell(result["primary"]["name"]),
        "" if value is None else format(value, ".10g"),
        "true" if result["valid"] else "false",
        "true" if result["improved_over_best"] else "false",
        _cell(result["note"]),
        result.get("diff", ""),  # `+a -b` against the train.py it started from (absent before it was recorded)
    )
    return "\t".join(cells)


def parse_row(line: str) -> dict:
    row = dict(zip(COLUMNS, line.rstrip("\n").split("\t")))
    value = row.get("value", "")
    try:
        row["value"] = float(value) if value else None
    except ValueError:
        row["value"] = None
    if row["value"] is not None and not math.isfinite(row["value"]):
        row["value"] = None
    return row


def create(path: Path) -> None:
    append_line(path, HEADER)


def append_row(path: Path, result: dict) -> None:
    append_line(path, format_row(result))


def drop_partial_row(path: Path) -> None:
    """A kill mid-append can leave a row without its newline: cut it so the next append starts clean."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        start = max(0, size - _BACK_CHUNK)
        while True:
            f.seek(start)
            cut = f.read(size - start).rfind(b"\n")
            if cut >= 0 or start == 0:
                f.truncate(start + cut + 1 if cut >= 0 else 0)
                return
            start = max(0, start - _BACK_CHUNK)


def tail_lines(path: Path, n: int) -> list[str]:
    """The last n complete data lines (header excluded), reading backwards from the end."""
    if n <= 0:
        return []
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return []
    with f:
        end = f.seek(0, os.SEEK_END)
        data = b""
        start = end
        while start > 0 and data.count(b"\n") <= n + 1:
            start = max(0, start - _BACK_CHUNK)
            f.seek(start)
            data = f.read(end - start)
    lines = [ln for ln in data.decode(errors="replace").split("\n") if ln]
    if start > 0:
        lines = lines[1:]  # the first piece may be cut mid-line
    return [ln for ln in lines if ln != HEADER][-n:]


def tail_rows(path: Path, n: int) -> list[dict]:
    return [parse_row(line) for line in tail_lines(path, n)]


def data_lines(path: Path) -> Iterator[str]:
    """Every line but the header, without its newline."""
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            if line.strip() and not line.startswith("run_id\t"):
                yield line.rstrip("\n")


def iter_rows(path: Path) -> Iterator[dict]:
    """Rows of runs; a line that is not one (edited by hand) is skipped."""
    for line in data_lines(path):
        row = parse_row(line)
        if run_number(row["run_id"]) is not None and "verdict" in row:
            yield row
