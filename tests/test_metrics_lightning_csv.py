"""The lightning-csv backend on metrics.csv files written by a real Lightning CSVLogger.

One session fixture fits a tiny model four times (CPU): once before `started`, twice during the
run into the same save_dir (version_1, version_2), once logging inf and NaN. The logger records
every dict Lightning handed it, the framework's own account of what the file holds.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from conftest import Project, clean_env, run_python

from ar.layout import ExperimentPaths, RunPaths
from ar.metrics import Extraction, extract_metrics
from ar.metrics.lightning_csv import read_metrics_csv
from ar.settings import Experiment

TINY_FIT = """
import os, warnings
warnings.filterwarnings("ignore")
import torch
import lightning as L
from lightning.pytorch.loggers import CSVLogger


class RecordingCSVLogger(CSVLogger):
    # every dict Lightning logs, as the CSV writer turns it into a row (tensors to numbers, the step added)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logged = []

    def log_metrics(self, metrics, step=None):
        super().log_metrics(metrics, step)
        self.logged.append({**{k: float(v) for k, v in metrics.items()}, "step": float(step)})


class Regression(L.LightningModule):
    def __init__(self, nonfinite=False):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.nonfinite = nonfinite

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))
        if self.nonfinite:
            self.log_dict({"diverged": float("inf"), "nan_metric": float("nan")})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(save_dir, epochs, nonfinite=False):
    torch.manual_seed(epochs)
    x = torch.randn(32, 4)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    logger = RecordingCSVLogger(save_dir)
    trainer = L.Trainer(max_epochs=epochs, logger=logger, log_every_n_steps=1, accelerator="cpu", enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(Regression(nonfinite), data, data)
    return logger
"""

WRITER = TINY_FIT + """
import json, sys, time
run_dir = sys.argv[1]
logs = os.path.join(run_dir, "logs")
fit(logs, epochs=4)  # version_0, before the run
time.sleep(0.2)  # mtimes come from a coarse clock: keep both sides of `started` apart
started = time.time()
time.sleep(0.2)
first = fit(logs, epochs=2)  # version_1
second = fit(logs, epochs=3)  # version_2, the newest
fit(os.path.join(run_dir, "odd"), epochs=1, nonfinite=True)
print(json.dumps({"started": started, "first": first.logged, "second": second.logged, "second_dir": second.log_dir}))
"""


def last_values(logged: list[dict]) -> dict[str, float]:
    """What Lightning logged, as one dict: each name's last value."""
    return {key: value for row in logged for key, value in row.items()}


def extract(root: Path, run_dir: Path, started: float, **settings) -> Extraction:
    experiment = Experiment(slug="exp", goal="g", primary_metric="val_loss", primary_direction="min", **settings)
    return extract_metrics(experiment, ExperimentPaths(root, "exp"), RunPaths("r0001", run_dir), started, sys.executable)


@pytest.fixture(scope="session")
def fitted(hosts_python: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("lightning") / "run"
    record = json.loads(run_python(hosts_python, WRITER, str(run_dir)).splitlines()[-1])
    return run_dir, record


def test_newest_metrics_csv_equals_what_lightning_logged(fitted: tuple[Path, dict]) -> None:
    run_dir, record = fitted
    got = extract(run_dir.parent, run_dir, record["started"], metric_backend="lightning-csv",
                  metrics_glob="{run_dir}/logs/**/metrics.csv")
    assert (got.source, got.problem) == ("lightning-csv", None)
    assert got.metrics == last_values(record["second"]) != last_values(record["first"])
    assert {"epoch", "step", "train_loss", "val_loss"} <= set(got.metrics)  # epoch and step are numbers too
    assert Path(record["second_dir"]).name == "version_2"


def test_files_from_before_the_run_are_ignored(fitted: tuple[Path, dict]) -> None:
    run_dir, record = fitted
    stale_only = "{run_dir}/logs/lightning_logs/version_0/metrics.csv"
    got = extract(run_dir.parent, run_dir, record["started"], metric_backend="lightning-csv", metrics_glob=stale_only)
    assert got.metrics == {} and got.problem == f"lightning-csv: no metrics.csv written during the run matches {stale_only}"
    assert extract(run_dir.parent, run_dir, 0, metric_backend="lightning-csv", metrics_glob=stale_only).metrics["epoch"] == 3.0


def test_non_finite_values_stay_floats(fitted: tuple[Path, dict]) -> None:
    run_dir, _ = fitted
    metrics = read_metrics_csv(run_dir / "odd" / "lightning_logs" / "version_0" / "metrics.csv")
    assert metrics["diverged"] == math.inf and math.isnan(metrics["nan_metric"])


def test_a_row_cut_by_a_kill_is_not_read(fitted: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, record = fitted
    whole = (Path(record["second_dir"]) / "metrics.csv").read_bytes()
    complete = whole[: whole.rstrip(b"\n").rfind(b"\n") + 1]  # without its last row
    cut = tmp_path / "cut.csv"
    cut.write_bytes(whole[:-5])  # the last number loses digits and the row its line end
    (tmp_path / "complete.csv").write_bytes(complete)
    assert read_metrics_csv(cut) == read_metrics_csv(tmp_path / "complete.csv") != last_values(record["second"])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8 text"),
        (b"", None),
        (b"epoch,step,val_loss\r\n", None),
    ],
)
def test_a_broken_file_is_a_problem_line_never_an_exception(tmp_path: Path, content: bytes, problem: str | None) -> None:
    path = tmp_path / "run" / "lightning_logs" / "version_0" / "metrics.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    got = extract(tmp_path, tmp_path / "run", 0, metric_backend="lightning-csv")
    assert got.metrics == {}
    assert (got.problem is None) if problem is None else (problem in got.problem and str(path) in got.problem)


TRAIN_PY = TINY_FIT + """
import json
logger = fit(os.environ["AR_RUN_DIR"], epochs=3)  # save_dir: the run directory, where ar looks by default
with open(os.path.join(os.environ["AR_RUN_DIR"], "record.json"), "w") as f:
    json.dump(logger.logged, f)
"""


def test_lightning_csv_backend_end_to_end(tmp_path: Path, hosts_python: Path) -> None:
    project = Project(tmp_path)
    project.ar("init", "--example", "--expr", "exp", "--goal", "g", "--primary-metric", "val_loss", "--primary-direction", "min",
               "--seconds", "240", "--metric-backend", "lightning-csv", "--runner", f"{hosts_python} {{train_py}}", check=True)
    project.write_train(TRAIN_PY)
    done = project.ar("run", env=clean_env(WANDB_MODE="disabled"), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = project.result("r0001")
    logged = last_values(json.loads((project.expr / "runs" / "r0001" / "record.json").read_text()))
    assert result["metric_source"] == "lightning-csv" and result["verdict"] == "advance", result
    assert result["primary"]["value"] == logged["val_loss"]
    assert result["metrics"]["train_loss"] == logged["train_loss"] and result["metrics"]["step"] == logged["step"]
