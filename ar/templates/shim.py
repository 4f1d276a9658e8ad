#!/usr/bin/env python3
"""Runs the autoresearch helper: `uv run python .autoresearch/ar.py <command> ...`.

Started with the project's own interpreter, which need not have ar's dependencies, it hands
over (exec, so the exit code passes through) to the interpreter ar was installed with. It
never installs anything into the project's environment.
"""

import os
import shutil
import sys

AR_PYTHON = __AR_PYTHON__  # the interpreter that has ar and its dependencies
AR_SOURCE = __AR_SOURCE__  # ar's project directory, for `uv run --project` if that interpreter is gone


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, AR_PROJECT_ROOT=root, AR_PROJECT_PYTHON=sys.executable)
    args = sys.argv[1:]
    if os.access(AR_PYTHON, os.X_OK):
        os.execve(AR_PYTHON, [AR_PYTHON, "-m", "ar", *args], env)
    uv = shutil.which("uv")
    if uv and os.path.isfile(os.path.join(AR_SOURCE, "pyproject.toml")):
        os.execve(uv, [uv, "run", "--quiet", "--project", AR_SOURCE, "python", "-m", "ar", *args], env)
    sys.stderr.write(f"ar: cannot find the autoresearch runtime ({AR_PYTHON}) (fix: reinstall the plugin, then run `ar init` again)\n")
    sys.exit(1)


if __name__ == "__main__":
    main()
