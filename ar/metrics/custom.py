"""The `custom` backend: `extract_metrics(run_dir, log_tail)` from the experiment's prepare.py.

It runs in the project's own interpreter (prepare.py may import the project's libraries, which
ar's environment lacks), in a subprocess, so its exceptions and its printing cannot touch ar.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from ar.metrics.errors import MetricsError
from ar.tailback import tail_bytes

FUNCTION = "extract_metrics"
TAIL_BYTES = 64 << 10  # the end of run.log handed to the function
TIMEOUT_SECONDS = 120

# Runs in the project's interpreter: argv = prepare.py, run dir; stdin = log tail; one JSON line on stdout.
_CALLER = f"""
import json, math, os, runpy, sys, traceback
from pathlib import Path
out, sys.stdout = sys.stdout, sys.stderr  # the function's own prints must not garble the answer
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))
try:
    found = runpy.run_path(sys.argv[1]).get({FUNCTION!r})
    if found is None:
        raise LookupError("prepare.py defines no {FUNCTION}(run_dir, log_tail)")
    result = found(Path(sys.argv[2]), sys.stdin.read())
    if not isinstance(result, dict):
        raise TypeError(f"{FUNCTION} returned {{type(result).__name__}}, not a dict")
    metrics, rejected = {{}}, []
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[str(key)] = repr(float(value))
        else:
            rejected.append(str(key))
    answer = {{"metrics": metrics, "rejected": rejected}}
except BaseException as exc:
    line = traceback.format_exception_only(type(exc), exc)[-1].strip()
    answer = {{"error": line}}
out.write(json.dumps(answer) + "\\n")
"""


def run_custom(python: str, prepare_py: Path, run_dir: Path, log_tail: str, cwd: Path) -> tuple[dict[str, float], str | None]:
    """(metrics, problem). Raises MetricsError when the function cannot give any metrics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AR_")}
    try:
        done = subprocess.run(
            [python, "-c", _CALLER, str(prepare_py), str(run_dir)],
            input=log_tail, capture_output=True, text=True, cwd=cwd, env=env, timeout=TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise MetricsError(f"{FUNCTION} took longer than {TIMEOUT_SECONDS} s") from None
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise MetricsError(f"{FUNCTION} did not answer (exit {done.returncode}: {detail})") from None
    if "error" in answer:
        raise MetricsError(f"{FUNCTION} raised {answer['error'][:200]}")
    metrics = {name: float(value) for name, value in answer["metrics"].items()}
    rejected = answer["rejected"]
    problem = f"{FUNCTION} returned non-numbers for: {', '.join(rejected[:5])}" if rejected else None
    return metrics, problem


def log_tail(path: Path) -> str:
    return tail_bytes(path, TAIL_BYTES)[1].decode("utf-8", "replace")
