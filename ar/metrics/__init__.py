"""Metrics of a finished run from the experiment's backend (SPEC §5.3).

Each backend module reads one kind of output (log, wandb, hf-trainer, lightning-csv, mlflow,
tensorboard, custom) without importing the library that wrote it; `auto` takes the first of
wandb -> hf-trainer -> lightning-csv -> mlflow -> tensorboard -> log that has the primary metric.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ar.layout import ExperimentPaths, RunPaths
from ar.metrics.errors import MetricsError
from ar.settings import Experiment

BACKENDS = ("log", "wandb", "hf-trainer", "lightning-csv", "mlflow", "tensorboard", "custom", "auto")
AUTO_ORDER = ("wandb", "hf-trainer", "lightning-csv", "mlflow", "tensorboard", "log")


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
    if backend == "hf-trainer":
        from ar.metrics.hf_trainer import DEFAULT_GLOB, FILE_NAME, read_trainer_state

        return _read_newest(read_trainer_state, FILE_NAME, DEFAULT_GLOB, experiment, paths, run, started)
    if backend == "lightning-csv":
        from ar.metrics.lightning_csv import DEFAULT_GLOB, FILE_NAME, read_metrics_csv

        return _read_newest(read_metrics_csv, FILE_NAME, DEFAULT_GLOB, experiment, paths, run, started)
    if backend == "mlflow":
        return _read_mlflow(experiment, paths, started)
    if backend == "tensorboard":
        from ar.metrics.tensorboard import DEFAULT_GLOB, read_events
        from ar.metrics.written import files_written_since

        files = files_written_since(paths.root, experiment.tb_events_glob or DEFAULT_GLOB, run.dir, started)
        return read_events(files), None if files else "no event file was written during the run"
    from ar.metrics.custom import log_tail, run_custom

    return run_custom(python, paths.prepare_py, run.dir, log_tail(run.log), paths.root)


def _read_newest(read, file_name: str, default_glob: str, experiment: Experiment, paths: ExperimentPaths, run: RunPaths, started: float):
    """`read` of the newest file written during the run: the frameworks write these files in step
    order, so the newest one holds the whole record (older ones are earlier checkpoints)."""
    from ar.metrics.written import files_written_since  # oldest first

    pattern = experiment.metrics_glob or default_glob
    files = files_written_since(paths.root, pattern, run.dir, started)
    if experiment.metric_backend == "auto":  # one --metrics-glob serves both: each takes its own file name
        files = [path for path in files if path.name == file_name]
    if not files:
        return {}, f"no {file_name} written during the run matches {pattern}"
    return read(files[-1]), None


def _read_mlflow(experiment: Experiment, paths: ExperimentPaths, started: float):
    from ar.metrics.mlflow_store import in_use, read_mlflow, resolve_store

    store = resolve_store(experiment.mlflow_tracking_uri, os.environ, paths.root)
    if experiment.metric_backend == "auto" and not in_use(store):
        return {}, None  # no store configured and none of MLflow's defaults exist: not an MLflow training
    metrics = read_mlflow(store, started, os.environ)
    if metrics is None:
        return {}, f"no MLflow run started during the run in {store.kind} store {store.location}"
    return metrics, None
