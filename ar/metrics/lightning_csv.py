"""Metrics from a Lightning CSVLogger's metrics.csv, read without Lightning.

The logger writes `<save_dir>/<name>/version_<n>/metrics.csv`: a header of every metric name
(rewritten whole when a new name appears), then one row per logging call with empty cells for the
names not logged then; `epoch` and `step` are columns like any other (lightning 2.6.6). It appends
rows every `flush_logs_every_n_steps` and at the end, so a killed training can leave a last row
without its line end: that row is not read.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path

from ar.metrics.errors import MetricsError

FILE_NAME = "metrics.csv"  # lightning.fabric.loggers.csv_logs._ExperimentWriter.NAME_METRICS_FILE
DEFAULT_GLOB = "{run_dir}/**/" + FILE_NAME


def read_metrics_csv(path: Path) -> dict[str, float]:
    """The last non-empty value of each column; MetricsError (one line) when the file is not a CSV."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return last_values(csv.reader(_complete_lines(f)))
    except OSError as exc:
        raise MetricsError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise MetricsError(f"{path} is not a metrics.csv (not UTF-8 text)") from None
    except csv.Error as exc:
        raise MetricsError(f"{path} is not a metrics.csv ({exc})") from None


def last_values(rows: Iterable[list[str]]) -> dict[str, float]:
    """Rows after the header: per column, the last cell that reads as a number (nan and inf included)."""
    rows = iter(rows)
    header = next(rows, None)
    if not header:
        return {}
    latest: dict[int, float] = {}
    for row in rows:
        for column, cell in enumerate(row[: len(header)]):
            if cell:
                try:
                    latest[column] = float(cell)
                except ValueError:  # a text cell: not a metric
                    pass
    return {header[column]: value for column, value in sorted(latest.items())}


def _complete_lines(f) -> Iterator[str]:
    for line in f:
        if line.endswith("\n"):
            yield line
