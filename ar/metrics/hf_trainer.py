"""Metrics from a Hugging Face Trainer's trainer_state.json, read without transformers.

The Trainer writes one into every checkpoint-<step>/ it saves, and one into output_dir when the
script calls `trainer.save_state()`; each holds `log_history`, the list of every dict the Trainer
logged (`loss`, `eval_loss`, and at the end of train() `train_loss`, `train_runtime`). The newest
file written during the run is the record: the Trainer writes them in step order, and save_state()
after the last checkpoint, so the newest one has the whole history (transformers 5.24).
"""

from __future__ import annotations

import json
from pathlib import Path

from ar.metrics.errors import MetricsError

FILE_NAME = "trainer_state.json"  # transformers.trainer.TRAINER_STATE_NAME
DEFAULT_GLOB = "{run_dir}/**/" + FILE_NAME


def read_trainer_state(path: Path) -> dict[str, float]:
    """The last value of every numeric key over the file's log_history; MetricsError (one line) when
    the file is not a readable trainer_state.json (a cut one: the training was killed while saving)."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise MetricsError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        state = json.loads(text)  # NaN and Infinity too: the Trainer writes them as json.dumps does
    except (UnicodeDecodeError, RecursionError):
        raise MetricsError(f"{path} is not a trainer_state.json (not UTF-8 JSON)") from None
    except json.JSONDecodeError as exc:
        raise MetricsError(f"{path} is not valid JSON (cut while saving?): {exc.msg} at line {exc.lineno}") from None
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise MetricsError(f"{path} has no log_history list: not a Trainer's trainer_state.json")
    return last_values(history)


def last_values(history: list) -> dict[str, float]:
    """Each numeric key's value in the last log entry that has it (bools and text skipped)."""
    metrics: dict[str, float] = {}
    for entry in history:
        if not isinstance(entry, dict):
            continue
        for key, value in entry.items():
            if isinstance(value, float):
                metrics[key] = value
            elif isinstance(value, int) and not isinstance(value, bool):
                try:
                    metrics[key] = float(value)
                except OverflowError:  # an integer beyond any float: not a metric
                    pass
    return metrics
