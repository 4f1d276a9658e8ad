"""Real host projects (tests/hosts/, not written for autoresearch) driven through `ar init --entry`
and real `ar run`s: a baseline, an improving and a worsening override, a crash and a timeout each.

Checked every time: the value ar reports equals the framework's own record, the promoted
checkpoint is this run's and the others are gone, a crash's traceback is in `ar tail`, and no
process of a timed-out run survives."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import psutil
import pytest
from conftest import Project, clean_env, run_python

HOSTS = Path(__file__).resolve().parent / "hosts"


class Host(NamedTuple):
    folder: str
    init: tuple[str, ...]  # ar init arguments beyond the common ones
    knob: str  # the train.py constant the overrides go into
    improve: str  # its value for each run
    worse: str
    crash: str
    long: str
    record: Callable  # (project, run_id, hosts_python) -> the framework's own value of the primary metric
    checkpoint: str = "ckpt"  # where a run's checkpoint lies in its run directory
    seconds: int = 10  # the time limit of the timeout run: past the imports, inside training
    env: tuple[tuple[str, str], ...] = ()


def set_knob(host: Host, value: str) -> tuple[str, ...]:
    return ("--set", f"{host.knob}={value}")


# ----------------------------------------------------------------- the framework's own records


def hf_record(project: Project, run_id: str, python: Path) -> float:
    """HF Trainer's save_metrics("eval") file in the run's output_dir ($AR_CKPT_DIR), or its
    promoted copy."""
    for base in (project.expr / "runs" / run_id / "ckpt", project.expr / "best_ckpt" / "ckpt"):
        if (base / "eval_results.json").exists():
            return json.loads((base / "eval_results.json").read_text())["eval_loss"]
    raise AssertionError("no eval_results.json")


def lightning_record(project: Project, run_id: str, python: Path) -> float:
    """The last val_loss of the CSVLogger file, read with the csv reader Lightning's own users use (pandas-free)."""
    files = sorted((project.expr / "best_ckpt").rglob("metrics.csv"))
    assert len(files) == 1, files
    code = "import csv, sys; rows = [r['val_loss'] for r in csv.DictReader(open(sys.argv[1])) if r['val_loss']]; print(rows[-1])"
    return float(run_python(python, code, str(files[0])))


def mlflow_record(project: Project, run_id: str, python: Path) -> float:
    """val_acc of the newest run in the experiment's store, as MLflow's own client reports it."""
    code = (
        "import mlflow, sys; mlflow.set_tracking_uri('sqlite:///' + sys.argv[1]);"
        "runs = mlflow.search_runs(search_all_experiments=True, order_by=['attributes.start_time DESC']);"
        "print(runs.iloc[0]['metrics.val_acc'])"
    )
    return float(run_python(python, code, str(project.root / "tracking.db")))


def tensorboard_record(project: Project, run_id: str, python: Path) -> float:
    """The last val_loss scalar of the run's event files, as TensorBoard's EventAccumulator reads them."""
    code = (
        "import sys; from tensorboard.backend.event_processing.event_accumulator import EventAccumulator as E;"
        "acc = E(sys.argv[1]); acc.Reload(); print(repr(acc.Scalars('val_loss')[-1].value))"
    )
    return float(run_python(python, code, str(project.expr / "runs" / run_id / "hydra" / "tb")))


def torch_record(project: Project, run_id: str, python: Path) -> float:
    """The val_loss rank 0 saved in its last.pt, as the training printed it (5 decimals)."""
    code = "import sys, torch; print(round(torch.load(sys.argv[1], weights_only=False)['val_loss'], 5))"
    return float(run_python(python, code, str(project.expr / "best_ckpt" / "ckpt" / "last.pt")))


def printed_record(project: Project, run_id: str, python: Path) -> float:
    """The best val_loss the main process printed last (accelerator.print), the training's own record."""
    lines = [line for line in (project.expr / "runs" / run_id / "run.log").read_text().splitlines() if line.startswith("best val_loss=")]
    assert len(lines) == 1, lines  # printed by the main process only
    return float(lines[0].split("=")[1].split(";")[0])


CASES = {
    "hf_wandb": Host(
        "hf_wandb",
        ("--entry", "run_clm.py", "--primary-metric", "eval_loss", "--primary-direction", "min", "--metric-backend", "hf-trainer",
         "--cli-args-json", '{"--max_steps": 60, "--eval_steps": 30, "--save_steps": 30}'),
        "CLI_OVERRIDES", '{"--learning_rate": 1e-2}', '{"--learning_rate": 1e-5}', '{"--pattern": "zigzag"}',
        '{"--max_steps": 100000}', hf_record,
    ),
    "lightning_csv": Host(
        "lightning_csv",
        ("--entry", "litproj.cli", "--primary-metric", "val_loss", "--primary-direction", "min", "--metric-backend", "lightning-csv",
         "--cli-args-json", '{"--max_epochs": 5}'),
        "CLI_OVERRIDES", '{"--lr": 1e-2}', '{"--lr": 1e-5}', '{"--val_fraction": 0}', '{"--max_epochs": 100000}', lightning_record,
    ),
    "mlflow_app": Host(
        "mlflow_app",
        ("--entry", "train_mlflow.py", "--primary-metric", "val_acc", "--primary-direction", "max", "--metric-backend", "mlflow",
         "--mlflow-tracking-uri", "sqlite:///tracking.db"),  # given to the training too (the default store: test_metrics_mlflow)
        "CLI_OVERRIDES", '{"--lr": 1e-2}', '{"--lr": 1e-5}', '{"--hidden": 0}', '{"--epochs": 100000}', mlflow_record,
    ),
    "hydra_tb": Host(
        "hydra_tb",
        ("--entry", "train_app.py", "--primary-metric", "val_loss", "--primary-direction", "min", "--metric-backend", "tensorboard"),
        "HYDRA_OVERRIDES", "['optimizer.lr=0.05']", "['optimizer.lr=1e-5']", "['model.activation=swish']", "['epochs=100000']",
        tensorboard_record, checkpoint="hydra/checkpoints",
    ),
    "torchrun_ddp": Host(
        "torchrun_ddp",
        ("--entry", "ddp_train.py", "--primary-metric", "val_loss", "--primary-direction", "min", "--launcher", "torchrun",
         "--nproc-per-node", "2"),
        "CLI_OVERRIDES", '{"--lr": 0.15}', '{"--lr": 1e-5}', '{"--lr_schedule": "zigzag"}', '{"--steps": 10000000}', torch_record,
        seconds=15,  # two processes start slower
    ),
    "accelerate_app": Host(
        "accelerate_app",
        ("--entry", "acc_train.py", "--primary-metric", "val_loss", "--primary-direction", "min", "--launcher", "accelerate",
         "--nproc-per-node", "2"),
        "CLI_OVERRIDES", '{"--lr": 1e-3}', '{"--lr": 1e-5}', '{"--val_fraction": 1.5}', '{"--epochs": 100000}', printed_record,
        seconds=15, env=(("ACCELERATE_USE_CPU", "1"),),  # as on a machine without GPUs
    ),
}


def survivors(run_dir: Path) -> list[int]:
    """Processes that still carry the run's tag in their environment."""
    tag = f"AR_RUN_DIR={run_dir.resolve()}"
    found = []
    for proc in psutil.process_iter():
        try:
            with open(f"/proc/{proc.pid}/environ", "rb") as f:
                if tag.encode() in f.read().split(b"\0"):
                    found.append(proc.pid)
        except OSError:
            continue
    return found


@pytest.mark.parametrize("name", sorted(CASES))
def test_host_project_through_its_entry_pattern(tmp_path: Path, hosts_python: Path, name: str) -> None:
    host = CASES[name]
    root = tmp_path / "project"
    shutil.copytree(HOSTS / host.folder, root, ignore=shutil.ignore_patterns("HOST.md", "__pycache__"))
    env = clean_env(AR_PROJECT_PYTHON=str(hosts_python), WANDB_MODE="offline", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **dict(host.env))
    project = Project(root)

    def ar(*args: str):
        return project.ar(*args, env=env, timeout=300, check=True)

    ar("init", "--expr", "exp", "--goal", "g", "--seconds", "240", *host.init)
    ar("session", "--max-runs", "10")
    source_before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and ".autoresearch" not in p.parts}

    # 1. the baseline as set up
    assert "ok/advance" in ar("run").stdout
    baseline = project.result("r0001")
    assert baseline["primary"]["value"] == pytest.approx(host.record(project, "r0001", hosts_python), rel=1e-9)

    # 2. an improving override: advances; its checkpoint is promoted, the baseline's is gone
    baseline_ckpt = project.expr / "runs" / "r0001" / host.checkpoint
    done = ar("run", *set_knob(host, host.improve), "--note", "better lr")
    assert "ok/advance" in done.stdout, done.stdout
    better = project.result("r0002")
    assert better["primary"]["value"] == pytest.approx(host.record(project, "r0002", hosts_python), rel=1e-9)
    meta = json.loads((project.expr / "best_ckpt" / "meta.json").read_text())
    assert meta["run_id"] == "r0002"
    assert not any(p.is_file() for p in baseline_ckpt.rglob("*"))

    # 3-5 at once, on three slots (each judged against the best r0002 as it finishes):
    # a worsening override, a crash deep in the host's code, a run past the time limit.
    ar("session", "--slots", "3", "--gpus-per-slot", "0")
    ar("submit", *set_knob(host, host.worse), "--note", "tiny lr")
    ar("submit", *set_knob(host, host.crash), "--note", "bad option")
    ar("submit", "--seconds", str(host.seconds), *set_knob(host, host.long), "--note", "long")
    verdicts = {}
    for _ in range(3):
        lines = ar("wait", "--any", "--wait", "280").stdout.splitlines()
        verdicts[lines[0].split(" ")[1].rstrip(":")] = lines[2]
    assert sorted(verdicts) == ["r0003", "r0004", "r0005"], verdicts

    assert "ok/revert" in verdicts["r0003"], verdicts  # reverted, its checkpoint deleted
    worse = project.result("r0003")
    assert (worse["primary"]["value"] > better["primary"]["value"]) == (better["primary"]["direction"] == "min")
    assert not any(p.is_file() for p in (project.expr / "runs" / "r0003" / host.checkpoint).rglob("*"))
    assert json.loads((project.expr / "best_ckpt" / "meta.json").read_text())["run_id"] == "r0002"

    assert "crash/crash" in verdicts["r0004"], verdicts  # its traceback in `ar tail`
    assert "ValueError" in ar("tail", "--run", "r0004").stdout

    assert "timeout" in verdicts["r0005"], verdicts  # killed, nothing of it left
    assert survivors(project.expr / "runs" / "r0005") == []
    assert project.train_py.read_bytes() == (project.expr / "runs" / "r0002" / "train.py").read_bytes()

    # the host's own files never changed; the best is still the improving run
    assert {p: p.read_bytes() for p in source_before} == source_before
    assert project.best()["run_id"] == "r0002"
