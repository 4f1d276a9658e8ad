"""The one exception type `ar` raises for expected failures, and its exit codes.

Every command fails the same way: an ArError with a message naming the problem and a hint
naming the fix. `cli.main` prints it as one line and exits with its code.
"""

from __future__ import annotations

import os

# Exit codes, documented in the README; every command uses these and no others.
EXIT_OK = 0
EXIT_ERROR = 1  # bad input or refused action; the message says why and what to do
EXIT_USAGE = 2  # unknown command or flag (typer's own)
EXIT_RUNNING = 3  # `--wait S` elapsed and the run is still going: re-attach with `ar wait`
EXIT_TERMINATED = 4  # the experiment has terminated: no further runs
EXIT_BUSY = 5  # another iteration of this experiment is running
EXIT_UNCLEAN = 6  # processes of an earlier run survived SIGKILL (.ar-unclean)
EXIT_INTERRUPTED = 130  # the run was interrupted (Ctrl+C or `ar stop`)


SHIM = "uv run python .autoresearch/ar.py"
PROG = "autoresearch"  # the console script; never `ar`, which is binutils' archiver


def as_typed(text: str) -> str:
    """Commands in a message (written `ar <command>`) as the caller must type them: through the
    shim when started through it (an agent's shell), else with the console script's name."""
    return text.replace("`ar ", f"`{SHIM if os.environ.get('AR_PROJECT_ROOT') else PROG} ")


class ArError(Exception):
    def __init__(self, message: str, hint: str = "", code: int = EXIT_ERROR):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code

    def line(self) -> str:
        text = f"ar: {self.message}"
        if self.hint:
            text += f" (fix: {self.hint})"
        return as_typed(" ".join(text.split()))  # always one line, whatever the message carried
