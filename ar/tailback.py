"""The end of a run's log, focused on its last Python traceback and ending with the error line."""
from __future__ import annotations

import os
from pathlib import Path

from ar.text import clip, printable

MAX_LINES = 100
MAX_LINE_CHARS = 240
TAIL_BYTES = 256 << 10  # only the end of the log is read, however long the log is

_HEADER = "Traceback (most recent call last):"
# torchrun prints this wrapper traceback after the workers' own: the cause is in the one before it.
_LAUNCHER_ERROR = "ChildFailedError"


def tail_bytes(path: Path, size: int) -> tuple[int, bytes]:
    """(offset, bytes) of the last `size` bytes of the file; (0, b"") if it cannot be read."""
    try:
        with open(path, "rb") as f:
            start = max(0, f.seek(0, os.SEEK_END) - size)
            f.seek(start)
            return start, f.read(size)
    except OSError:
        return 0, b""


def log_tail(path: Path, lines: int = 30) -> list[str]:
    """The last traceback of the log (header to error line), else its last lines; [] if it is missing."""
    limit = min(max(lines, 1), MAX_LINES)
    start, data = tail_bytes(path, TAIL_BYTES)
    if not data:
        return []
    first_newline = data.find(b"\n")
    if start and 0 <= first_newline < len(data) - 1:
        data = data[first_newline + 1 :]  # the first line was cut by the seek
    rows = [_as_shown(line) for line in data.decode("utf-8", "replace").split("\n")]
    while rows and not rows[-1]:
        rows.pop()
    block = _last_traceback(rows)
    if block is None:
        picked = rows[-limit:]
    elif len(block) <= limit:
        picked = block
    elif limit >= 3:
        picked = [block[0], "...", *block[2 - limit :]]
    else:
        picked = [block[0], block[-1]][-limit:]
    return [clip(row, MAX_LINE_CHARS) for row in picked]


def _as_shown(line: str) -> str:
    # A progress bar redraws its line with \r: a terminal shows only the last drawing.
    return printable(line.rstrip().rpartition("\r")[2].rstrip())


def _last_traceback(rows: list[str]) -> list[str] | None:
    fallback = None
    for i in range(len(rows) - 1, -1, -1):
        if rows[i].endswith(_HEADER):
            block = _traceback_at(rows, i)
            if block is None:
                continue
            if _LAUNCHER_ERROR not in block[-1]:
                return block
            fallback = fallback or block
    return fallback


def _traceback_at(rows: list[str], header: int) -> list[str] | None:
    """The traceback whose header is rows[header], down to its error line (or the log's end, if cut short)."""
    # Every line of it carries the header's prefix (`[rank0]: ` under torchrun); lines without it are
    # other processes' output interleaved.
    prefix = rows[header][: -len(_HEADER)]
    block = [rows[header]]
    for row in rows[header + 1 :]:
        if not row.startswith(prefix) or len(row) == len(prefix):
            continue
        block.append(row)
        if not row[len(prefix)].isspace():  # frames are indented; the error line is not
            return block
    return block if len(block) > 1 else None
