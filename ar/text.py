"""Text that `ar` prints or records but did not write (RUN_NOTE, log lines, library messages):
one line, no control characters, capped. A terminal never receives an escape sequence from a
train.py through `ar`, and results.tsv never a tab or newline inside a field."""

from __future__ import annotations

import time

# C0 controls, DEL and C1 controls: whitespace ones become a space, the rest a visible \xNN.
_SHOWN = {code: " " if chr(code) in "\t\n\r\v\f" else f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    return text.translate(_SHOWN)


def clip(text: str, chars: int) -> str:
    """Printable, at most `chars` characters; a cut is marked with an ellipsis."""
    text = printable(text)
    return text if len(text) <= chars else text[: chars - 1] + "…"


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_time(epoch: float | None = None) -> str:
    return time.strftime(TIME_FORMAT, time.gmtime(epoch))
