"""best.json and train.py: promote on advance, restore otherwise.

Ground truth is best.json + runs/<best_id>/train.py; before any best, the baseline copy.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ar.durable import read_json, write_bytes_atomic, write_json_atomic
from ar.errors import ArError
from ar.layout import ExperimentPaths


def load_best(paths: ExperimentPaths) -> dict | None:
    if not paths.best.exists():
        return None
    best = read_json(paths.best, "delete best.json and run `ar status` to rebuild it from results")
    if not isinstance(best, dict) or not isinstance(best.get("run_id"), str):
        raise ArError("best.json has no run_id", "delete best.json and run `ar status` to rebuild it from results")
    return best


def best_value(best: dict | None) -> float | None:
    return best["value"] if best else None


def promote_best(paths: ExperimentPaths, result: dict, checkpoint: str | None) -> None:
    """best.json for an advanced run; `checkpoint` is best_ckpt/<name> (relative to the experiment
    directory) once best_ckpt/ holds this run's checkpoint (ar/checkpoints.py does the swap)."""
    write_json_atomic(
        paths.best,
        {
            "run_id": result["run_id"],
            "metric": result["primary"]["name"],
            "direction": result["primary"]["direction"],
            "value": (result.get("best") or {}).get("value", result["primary"]["value"]),  # a mean over repeats
            "n": (result.get("best") or {}).get("n", 1),
            "noise": (result.get("best") or {}).get("noise"),  # {"sigma", "n"}: the baseline's spread over seeds
            "checkpoint": checkpoint,
            "train_py": paths.relative(paths.run(result["run_id"]).train_py),
        },
    )


def restore_source(paths: ExperimentPaths, best: dict | None) -> Path:
    return paths.run(best["run_id"]).train_py if best else paths.baseline_py


TRAIN_PY_MAX_BYTES = 4 << 20  # a training script, not data: bounds every snapshot and comparison


def train_py_problem(path: Path) -> str | None:
    """Why path is no train.py to read or snapshot ("is missing", "is a symlink, ..."); None when
    it is a regular file of sane size. Anything else is never opened (a symlink to /dev/zero)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "is missing"
    if not stat.S_ISREG(info.st_mode):
        kind = "symlink" if stat.S_ISLNK(info.st_mode) else "directory" if stat.S_ISDIR(info.st_mode) else "special file"
        return f"is a {kind}, not a regular file"
    if info.st_size > TRAIN_PY_MAX_BYTES:
        return f"is {info.st_size / (1 << 20):.1f} MiB (the limit is {TRAIN_PY_MAX_BYTES >> 20} MiB)"
    return None


def train_py_bytes(path: Path) -> bytes | None:
    """The content of a sane train.py; None for anything train_py_problem refuses."""
    return None if train_py_problem(path) else path.read_bytes()


def restore_train_py(paths: ExperimentPaths, best: dict | None) -> bool:
    """Put the best (or baseline) train.py back; True when it had to change."""
    wanted = restore_source(paths, best).read_bytes()
    if train_py_bytes(paths.train_py) == wanted:
        return False
    if paths.train_py.is_dir() and not paths.train_py.is_symlink():
        raise ArError(f"{paths.relative(paths.train_py)} is a directory", "move it away; train.py is then restored")
    write_bytes_atomic(paths.train_py, wanted)  # the rename replaces a symlink or FIFO itself
    return True


def train_py_in_sync(paths: ExperimentPaths, best: dict | None) -> bool:
    try:
        return train_py_bytes(paths.train_py) == restore_source(paths, best).read_bytes()
    except FileNotFoundError:
        return False
