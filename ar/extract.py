"""Metrics of a finished run, from the experiment's metric backend (SPEC §5.3)."""

from __future__ import annotations

from ar.layout import RunPaths
from ar.logscan import scan_log
from ar.settings import Experiment


def extract_metrics(experiment: Experiment, run: RunPaths) -> dict[str, float]:
    wanted = [experiment.primary_metric, *(c.name for c in experiment.parsed_constraints())]
    pattern = experiment.log_pattern
    return scan_log(run.log, pattern, wanted if pattern and "{name}" in pattern else None)
