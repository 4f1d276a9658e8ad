"""Crash points for the kill-at-any-instant tests.

`AR_CRASH_AT=<point>` makes the process SIGKILL itself when it reaches that point: a real,
uncatchable death at a known step, after which the tests check that the next command
repairs everything. Never set in normal use; AR_* variables are not passed to training runs.
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("AR_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
