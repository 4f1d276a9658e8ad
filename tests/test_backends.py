"""Metric backends, measured metrics and the noise floor, end to end through `ar run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Project, clean_env, printing

EXTRACT = '''
import json

def extract_metrics(run_dir, log_tail):
    data = json.loads((run_dir / "metrics.json").read_text())
    return {"val_loss": data["loss"], "tokens": data["tokens"], "label": "not a number", "flag": True}
'''

WRITES_METRICS = """
import json, os
from pathlib import Path
Path(os.environ["AR_RUN_DIR"], "metrics.json").write_text(json.dumps({{"loss": {loss}, "tokens": 1000}}))
print("done")
"""


def custom_project(tmp_path: Path, code: str = EXTRACT) -> Project:
    project = Project(tmp_path)
    project.ar("init", "--example", "--expr", "exp", "--goal", "g", "--primary-metric", "val_loss", "--primary-direction", "min",
               "--metric-backend", "custom", "--metric-extract-code", code, check=True)
    return project


def test_custom_backend_reads_what_the_function_returns(tmp_path: Path) -> None:
    project = custom_project(tmp_path)
    assert "def extract_metrics(run_dir, log_tail)" in (project.expr / "prepare.py").read_text()
    project.write_train(WRITES_METRICS.format(loss=0.25))
    done = project.ar("run", check=True)
    assert "metric val_loss=0.25" in done.stdout
    result = project.result("r0001")
    assert result["metric_source"] == "custom" and result["verdict"] == "advance"
    assert result["metrics"]["tokens"] == 1000.0 and "label" not in result["metrics"] and "flag" not in result["metrics"]


def test_custom_function_that_raises_is_reported_not_swallowed(tmp_path: Path) -> None:
    project = custom_project(tmp_path, "def extract_metrics(run_dir, log_tail):\n    raise KeyError('no loss in ' + run_dir.name)\n")
    project.write_train("print('hello')\n")
    done = project.ar("run")
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 3
    result = project.result("r0001")
    assert (result["status"], result["verdict"]) == ("invalid", "revert")
    assert "extract_metrics raised KeyError" in result["reason"] and "no loss in r0001" in result["reason"]


def test_custom_function_returning_non_numbers(tmp_path: Path) -> None:
    project = custom_project(tmp_path, "def extract_metrics(run_dir, log_tail):\n    return {'val_loss': 'low', 'n': [1]}\n")
    project.write_train("print('hello')\n")
    project.ar("run", check=True)
    result = project.result("r0001")
    assert result["status"] == "invalid"
    assert "non-numbers for: val_loss, n" in result["reason"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metric-backend", "custom"], "go together"),
        (["--metric-extract-code", "def extract_metrics(a, b): pass"], "go together"),
        (["--metric-backend", "custom", "--metric-extract-code", "def extract_metrics(:"], "does not compile"),
        (["--metric-backend", "custom", "--metric-extract-code", "def other(a, b): pass"], "defines no extract_metrics"),
        (["--tb-events-glob", "runs/**"], "needs --metric-backend tensorboard"),
        (["--metric-backend", "tensorboard", "--tb-events-glob", " "], "needs --metric-backend tensorboard"),
        (["--metric-backend", "comet"], "not available"),
        (["--metrics-glob", "logs/**/metrics.csv"], "needs --metric-backend hf-trainer, lightning-csv or auto"),
        (["--metric-backend", "tensorboard", "--mlflow-tracking-uri", "sqlite:///mlflow.db"], "needs --metric-backend mlflow or auto"),
    ],
)
def test_backend_options_are_validated_before_anything_is_created(tmp_path: Path, args: list[str], message: str) -> None:
    done = Project(tmp_path).ar("init", "--example", "--expr", "exp", "--goal", "g", "--primary-metric", "val_loss", "--primary-direction", "min", *args)
    assert done.returncode == 1 and message in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / ".autoresearch").exists()


def test_auto_falls_back_to_the_log(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.ar("init", "--example", "--expr", "exp", "--goal", "g", "--primary-metric", "val_loss", "--primary-direction", "min",
               "--metric-backend", "auto", check=True)
    project.write_train(printing("0.5"))
    project.ar("run", check=True)
    result = project.result("r0001")
    assert result["metric_source"] == "log" and result["primary"]["value"] == 0.5


def test_measured_metrics_and_constraints_on_them(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.ar("init", "--example", "--expr", "exp", "--goal", "g", "--primary-metric", "val_loss", "--primary-direction", "min",
               "--constraints", "wall_seconds<=60", "--constraints", "peak_rss_mb<=100", check=True)
    project.write_train("import time\nblob = bytearray(50 << 20)\nfor i in range(0, len(blob), 4096):\n    blob[i] = 1\n"
                        "time.sleep(0.5)\nprint('val_loss=1.0')\n", note="small")
    project.ar("run", check=True)
    first = project.result("r0001")
    assert first["verdict"] == "advance" and first["valid"]
    assert 0.5 <= first["metrics"]["wall_seconds"] < 60 and first["metrics"]["peak_rss_mb"] >= 50
    project.write_train("import time\nblob = bytearray(300 << 20)\nfor i in range(0, len(blob), 4096):\n    blob[i] = 1\n"
                        "time.sleep(0.5)\nprint('val_loss=0.5')\n", note="big")
    done = project.ar("run", check=True)
    second = project.result("r0002")
    assert (second["status"], second["verdict"], second["valid"], second["improved_over_best"]) == ("ok", "revert", False, True)
    failed = [c for c in second["constraints"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["peak_rss_mb"] and failed[0]["value"] >= 300
    assert "peak_rss_mb<=100 failed" in done.stdout


def test_noise_floor_keeps_small_gains_from_advancing(project: Project) -> None:
    project.ar("session", "--min-delta", "0.01", "--min-rel-delta", "0.05", check=True)
    assert "min gain 0.01 or 5.00%" in project.ar("status", check=True).stdout
    for value in ("1.0", "0.97", "0.94"):  # floor = max(0.01, 5% of 1.0) = 0.05
        project.write_train(printing(value))
        project.ar("run", check=True)
    assert [project.result(r)["verdict"] for r in ("r0001", "r0002", "r0003")] == ["advance", "revert", "advance"]
    noisy = project.result("r0002")
    assert noisy["improved_over_best"] is False and "within the noise floor 0.05" in noisy["reason"]
    data = json.loads(project.ar("session", "--json", check=True).stdout)
    assert data["loop"]["min_delta"] == 0.01 and data["loop"]["min_rel_delta"] == 0.05
    bad = project.ar("session", "--min-rel-delta", "1.5")
    assert bad.returncode == 1 and "out of range" in bad.stderr


def test_wandb_dir_points_into_the_run_unless_the_user_set_it(project: Project, tmp_path: Path) -> None:
    project.write_train("import os\nprint('dir', os.environ['WANDB_DIR'])\nprint('val_loss=1')\n")
    project.ar("run", check=True)
    assert f"dir {project.expr / 'runs' / 'r0001'}" in (project.expr / "runs" / "r0001" / "run.log").read_text()
    project.ar("run", env=clean_env(WANDB_DIR=str(tmp_path / "mine")), check=True)
    assert f"dir {tmp_path / 'mine'}" in (project.expr / "runs" / "r0002" / "run.log").read_text()


WANDB_TRAIN = """
import wandb
run = wandb.init(project="ar-test", mode="offline")
for step in range(5):
    wandb.log({"val_loss": 1.0 / (step + 1), "eval": {"top1": 0.1 * step}, "train/loss": 2.0 - step})
run.finish()
"""


def test_wandb_backend_end_to_end(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.ar("init", "--example", "--expr", "exp", "--goal", "g", "--primary-metric", "val_loss", "--primary-direction", "min",
               "--metric-backend", "wandb", "--constraints", "eval.top1>=0.3", check=True)
    project.write_train(WANDB_TRAIN)
    env = clean_env(WANDB_SILENT="true", WANDB_CONFIG_DIR=str(tmp_path / "cfg"), WANDB_CACHE_DIR=str(tmp_path / "cache"))
    done = project.ar("run", env=env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    result = project.result("r0001")
    assert result["metric_source"] == "wandb" and result["verdict"] == "advance", result
    assert result["primary"]["value"] == 0.2
    assert result["metrics"]["train/loss"] == -2.0 and result["constraints"][0]["passed"]
    assert list((project.expr / "runs" / "r0001" / "wandb").glob("offline-run-*/run-*.wandb"))


BROKEN_SUMMARY = """
import os, time
from pathlib import Path
files = Path(os.environ["WANDB_DIR"], "wandb", time.strftime("run-%Y%m%d_%H%M%S-abc123"), "files")
files.mkdir(parents=True)
(files / "wandb-summary.json").write_text('{"val_loss": 0.5, "eval": {"top1"')  # cut mid-write
"""


def test_truncated_wandb_summary_gives_a_clear_reason(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.ar("init", "--example", "--expr", "exp", "--goal", "g", "--primary-metric", "val_loss", "--primary-direction", "min",
               "--metric-backend", "wandb", check=True)
    project.write_train(BROKEN_SUMMARY)
    done = project.ar("run", check=True)
    result = project.result("r0001")
    assert (result["status"], result["verdict"]) == ("invalid", "revert")
    assert "wandb-summary.json" in result["reason"] and "val_loss not found by the wandb backend" in result["reason"]
    assert "wandb-summary.json" in done.stdout.splitlines()[-1]


TENSORBOARD_TRAIN = """
import os
from tensorboard.summary import Writer
writer = Writer(os.path.join(os.environ["AR_RUN_DIR"], "tb"))
for step in range(20):
    writer.add_scalar("val/loss", 1.0 / (step + 1), step=step)
    writer.add_scalar("train_loss", 2.0 - 0.1 * step, step=step)
writer.close()
"""


def test_tensorboard_backend_end_to_end(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.ar("init", "--example", "--expr", "exp", "--goal", "g", "--primary-metric", "val/loss", "--primary-direction", "min",
               "--metric-backend", "auto", check=True)
    project.write_train(TENSORBOARD_TRAIN)
    done = project.ar("run", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    result = project.result("r0001")
    assert result["metric_source"] == "tensorboard" and result["verdict"] == "advance", result
    assert abs(result["primary"]["value"] - 0.05) < 1e-6  # float32 in the event file
    assert abs(result["metrics"]["train_loss"] - 0.1) < 1e-6
