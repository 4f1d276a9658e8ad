"""`ar session --resume fresh`: every run, the best and the results go, all or nothing.

A marker file is written first; from then on the wipe is finished by whoever gets there, this
command or the repair after it was killed. Each thing wiped is renamed into a trash directory
(one rename, atomic), so no command ever sees half an experiment: the best pointing at a
deleted run, or runs without results. The trash is deleted last.
"""

from __future__ import annotations

import os
import shutil

from ar import results_log
from ar.best import restore_train_py
from ar.durable import write_json_atomic
from ar.faults import crash_point
from ar.layout import ExperimentPaths
from ar.state import LoopState, save_state


def wipe(paths: ExperimentPaths) -> None:
    write_json_atomic(paths.wipe_marker, {"wipe": "runs, best, results"})
    finish_wipe(paths)


def finish_wipe(paths: ExperimentPaths) -> None:
    """Complete a wipe whose marker exists (idempotent); delete a trash left behind."""
    trash = paths.wipe_trash
    if paths.wipe_marker.exists():
        trash.mkdir(exist_ok=True)
        # best.json first, so nothing points into runs/ while they go
        for path in (paths.best, paths.best_ckpt, paths.best_ckpt_staging, paths.best_ckpt_previous,
                     paths.runs, paths.results, paths.state):
            if os.path.lexists(path):
                shutil.rmtree(trash / path.name, ignore_errors=True)  # a redo: an earlier, new-made one
                os.rename(path, trash / path.name)
                crash_point(f"wipe_after_{path.name}")
        restore_train_py(paths, None)
        paths.runs.mkdir(exist_ok=True)
        results_log.create(paths.results)
        save_state(paths, LoopState())
        from ar.seal import seal  # here: the repair of every command imports this module

        seal(paths)
        paths.wipe_marker.unlink()
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
