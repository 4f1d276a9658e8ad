"""Metrics of a finished run from the experiment's backend (SPEC §5.3).

Each backend module reads one kind of output (log, wandb, tensorboard, custom) without
importing the library that wrote it; `auto` takes the first of wandb -> tensorboard -> log
that has the primary metric.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ar.layout import ExperimentPaths, RunPaths
from ar.metrics.errors import MetricsError
from ar.settings import Experiment

BACKENDS = ("log", "wandb", "tensorboard", "custom", "auto")
AUTO_ORDER = ("wandb", "tensorboard", "log")


class Extraction(NamedTuple):
    metrics: dict[str, float]
    source: str | None  # the backend the metrics came from
    problem: str | None  # why a backend could not read its data, for result.json


def extract_metrics(experiment: Experiment, paths: ExperimentPaths, run: RunPaths, started: float, python: str) -> Extraction:
    order = AUTO_ORDER if experiment.metric_backend == "auto" else (experiment.metric_backend,)
    problems: list[str] = []
    metrics: dict[str, float] = {}
    for backend in order:
        try:
            metrics, problem = _read(backend, experiment, paths, run, started, python)
        except MetricsError as exc:
            metrics, problem = {}, str(exc)
        if problem:
            problems.append(f"{backend}: {problem}")
        if experiment.primary_metric in metrics or backend == order[-1]:
            return Extraction(metrics, backend, "; ".join(problems) or None)
    raise AssertionError("unreachable")


def _read(backend: str, experiment: Experiment, paths: ExperimentPaths, run: RunPaths, started: float, python: str):
    if backend == "log":
        from ar.metrics.log import scan_log

        # The names it is judged on: the log is read back from its end only until each has been seen.
        wanted = [experiment.primary_metric, *(c.name for c in experiment.parsed_constraints())]
        return scan_log(run.log, experiment.log_pattern, wanted), None
    if backend == "wandb":
        from ar.metrics.wandb import read_wandb

        return read_wandb(run.dir, os.environ.get("WANDB_DIR"), started), None
    if backend == "tensorboard":
        from ar.metrics.tensorboard import DEFAULT_GLOB, find_event_files, read_events

        files = find_event_files(paths.root, experiment.tb_events_glob or DEFAULT_GLOB, run.dir, started)
        return read_events(files), None if files else "no event file was written during the run"
    from ar.metrics.custom import log_tail, run_custom

    return run_custom(python, paths.prepare_py, run.dir, log_tail(run.log), paths.root)
