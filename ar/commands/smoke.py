"""`ar smoke [--seconds N]`: try the current train.py under the watchdog before the night starts.

The training runs exactly as `ar run` would launch it (runner, environment, backend), in a
scratch run directory that is deleted afterwards: no run id, no row, no best, no state
changes. At most three lines: how it ended, whether the primary metric (and a checkpoint)
appeared, and the error line when it crashed. Exit 0 when the primary metric appeared.
"""

from __future__ import annotations

import os
import shutil
import time

from ar import launch
from ar.checkpoints import find_checkpoint
from ar.errors import EXIT_ERROR, EXIT_OK, ArError
from ar.experiments import resolve_experiment
from ar.iteration import check_train_py, check_unclean
from ar.judge import exit_reason
from ar.layout import RunPaths
from ar.lines import number
from ar.metrics import extract_metrics
from ar.settings import MAX_SECONDS, load_session
from ar.tailback import log_tail
from ar.text import clip

DEFAULT_SECONDS = 60


def smoke_command(expr: str | None, seconds: int) -> int:
    if not 1 <= seconds <= MAX_SECONDS:
        raise ArError(f"--seconds {seconds} is out of range", f"give 1 to {MAX_SECONDS} seconds")
    paths = resolve_experiment(expr)
    from ar.slots import claim, idle_books

    with idle_books(paths):  # slot 1, like a run on it: no `ar run` starts beside the check
        session = load_session(paths)
        check_unclean(paths)
        check_train_py(paths)
        slot = claim(paths, 1)
    with slot.lock:
        run = RunPaths("smoke", paths.dir / f".ar-smoke-{os.getpid()}")
        shutil.rmtree(run.dir, ignore_errors=True)
        run.dir.mkdir()
        run.ckpt_dir.mkdir()
        try:
            shutil.copyfile(paths.train_py, run.train_py)  # launched as a run's snapshot is
            started = time.time()
            outcome = launch.watch(paths, session, run, seconds, lambda pid: None)
            extraction = extract_metrics(session.experiment, paths, run, started, launch.project_python())
            checkpoint = find_checkpoint(paths, session.experiment, run, started)
            error = log_tail(run.log, 1) if outcome.status == "crash" else []
        finally:
            shutil.rmtree(run.dir, ignore_errors=True)
    metric = session.experiment.primary_metric
    value = extraction.metrics.get(metric)
    ended = {"ok": "exited 0", "timeout": f"still running at {seconds}s, stopped (fine for a long training)",
             "interrupted": "interrupted", "unclean": "processes survived SIGKILL"}.get(outcome.status, exit_reason(outcome.exit_code))
    lines = [f"smoke: started, {ended} after {outcome.wall_seconds:.1f}s"]
    found = f"{metric}={number(value)} found ({extraction.source})" if value is not None else f"{metric} not found ({extraction.source}" + (
        f": {extraction.problem})" if extraction.problem else ")")
    where = "$AR_CKPT_DIR" if not session.experiment.checkpoint_glob else checkpoint
    lines.append(f"metric {found}; checkpoint {f'saved ({where})' if checkpoint else 'none'}")
    if error:
        lines.append(f"error: {clip(error[-1], 200)}")
    print("\n".join(lines))
    return EXIT_OK if value is not None and outcome.status in ("ok", "timeout") else EXIT_ERROR
