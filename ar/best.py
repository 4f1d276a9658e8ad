"""best.json and train.py: promote on advance, restore otherwise.

Ground truth is best.json + runs/<best_id>/train.py; before any best, the baseline copy.
"""

from __future__ import annotations

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
            "value": result["primary"]["value"],
            "checkpoint": checkpoint,
            "train_py": paths.relative(paths.run(result["run_id"]).train_py),
        },
    )


def restore_source(paths: ExperimentPaths, best: dict | None) -> Path:
    return paths.run(best["run_id"]).train_py if best else paths.baseline_py


def restore_train_py(paths: ExperimentPaths, best: dict | None) -> bool:
    """Put the best (or baseline) train.py back; True when it had to change."""
    wanted = restore_source(paths, best).read_bytes()
    try:
        if paths.train_py.read_bytes() == wanted:
            return False
    except FileNotFoundError:
        pass
    write_bytes_atomic(paths.train_py, wanted)
    return True


def train_py_in_sync(paths: ExperimentPaths, best: dict | None) -> bool:
    try:
        return paths.train_py.read_bytes() == restore_source(paths, best).read_bytes()
    except FileNotFoundError:
        return False
