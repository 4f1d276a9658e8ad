"""The hf-trainer backend on trainer_state.json files written by a real transformers Trainer.

One session fixture trains twice (a tiny config-built GPT-2, CPU, no download): a stale training
before `started`, then the run's own with two checkpoints and save_state(). The Trainer's own
record (state.log_history at each save and at the end) comes back as JSON for comparison.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest

from conftest import Project, clean_env, run_python

from ar.layout import ExperimentPaths, RunPaths
from ar.metrics import Extraction, extract_metrics
from ar.metrics.hf_trainer import read_trainer_state
from ar.settings import Experiment

TINY_TRAINER = """
import copy, os
os.environ.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled", TRANSFORMERS_VERBOSITY="error")
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments


class Tokens(torch.utils.data.Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, i):
        ids = torch.tensor([(i + j) % 32 for j in range(8)])
        return {"input_ids": ids, "labels": ids}


class Snapshots(TrainerCallback):
    # on_save runs right after the checkpoint's trainer_state.json is written
    def __init__(self):
        self.saved = {}

    def on_save(self, args, state, control, **kwargs):
        self.saved[state.global_step] = copy.deepcopy(state.log_history)


def train(output_dir, max_steps, save_steps):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=32, n_positions=16))
    args = TrainingArguments(output_dir=output_dir, max_steps=max_steps, save_steps=save_steps, eval_strategy="steps",
                             eval_steps=3, logging_steps=2, per_device_train_batch_size=4, report_to="none",
                             use_cpu=True, disable_tqdm=True)
    snapshots = Snapshots()
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(), eval_dataset=Tokens(), callbacks=[snapshots])
    output = trainer.train()
    return trainer, snapshots, output
"""

WRITER = TINY_TRAINER + """
import json, sys, time
run_dir = sys.argv[1]
stale, _, _ = train(os.path.join(run_dir, "stale"), max_steps=8, save_steps=4)  # a higher global_step, but old
stale.save_state()
time.sleep(0.2)  # mtimes come from a coarse clock: keep both sides of `started` apart
started = time.time()
time.sleep(0.2)
trainer, snapshots, output = train(os.path.join(run_dir, "out"), max_steps=6, save_steps=3)
trainer.save_state()  # output_dir/trainer_state.json: the checkpoints' history plus the train summary
final = copy.deepcopy(trainer.state.log_history)
trainer.log({"diverged": float("inf"), "eval_nan": float("nan")})
os.makedirs(os.path.join(run_dir, "nonfinite"))
trainer.state.save_to_json(os.path.join(run_dir, "nonfinite", "trainer_state.json"))
print(json.dumps({"started": started, "final": final, "saved": snapshots.saved, "training_loss": output.training_loss}))
"""


def last_values(history: list[dict]) -> dict[str, float]:
    """The Trainer's log_history as one dict: each key's last logged value (all numbers here)."""
    return {key: float(value) for entry in history for key, value in entry.items()}


def extract(root: Path, run_dir: Path, started: float, **settings) -> Extraction:
    experiment = Experiment(slug="exp", goal="g", primary_metric="eval_loss", primary_direction="min", **settings)
    return extract_metrics(experiment, ExperimentPaths(root, "exp"), RunPaths("r0001", run_dir), started, sys.executable)


@pytest.fixture(scope="session")
def trained(hosts_python: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("hf") / "run"
    record = json.loads(run_python(hosts_python, WRITER, str(run_dir)).splitlines()[-1])
    return run_dir, record


def test_newest_file_is_save_states_and_equals_the_trainers_log_history(trained: tuple[Path, dict]) -> None:
    run_dir, record = trained
    got = extract(run_dir.parent, run_dir, record["started"], metric_backend="hf-trainer",
                  metrics_glob="{run_dir}/out/**/trainer_state.json")
    assert (got.source, got.problem) == ("hf-trainer", None)
    assert got.metrics == last_values(record["final"])
    assert got.metrics["train_loss"] == record["training_loss"]  # the summary save_state() adds
    assert got.metrics["eval_loss"] == [e for e in record["final"] if "eval_loss" in e][-1]["eval_loss"]


def test_without_save_state_the_newest_checkpoint_wins(trained: tuple[Path, dict]) -> None:
    run_dir, record = trained
    got = extract(run_dir.parent, run_dir, record["started"], metric_backend="hf-trainer",
                  metrics_glob="{run_dir}/out/checkpoint-*/trainer_state.json")
    assert got.metrics == last_values(record["saved"]["6"]) != last_values(record["saved"]["3"])
    assert "train_loss" not in got.metrics


def test_files_from_before_the_run_are_ignored(trained: tuple[Path, dict]) -> None:
    run_dir, record = trained
    stale_only = "{run_dir}/stale/**/trainer_state.json"  # global_step 8, more than the run's 6
    got = extract(run_dir.parent, run_dir, record["started"], metric_backend="hf-trainer", metrics_glob=stale_only)
    assert got.metrics == {} and got.problem == f"hf-trainer: no trainer_state.json written during the run matches {stale_only}"
    assert extract(run_dir.parent, run_dir, 0, metric_backend="hf-trainer", metrics_glob=stale_only).metrics["eval_loss"] > 0


def test_non_finite_values_stay_floats(trained: tuple[Path, dict]) -> None:
    run_dir, _ = trained
    metrics = read_trainer_state(run_dir / "nonfinite" / "trainer_state.json")
    assert metrics["diverged"] == math.inf and math.isnan(metrics["eval_nan"])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("cut", "is not valid JSON (cut while saving?)"),
        (b"\x89PNG\r\n\x1a\n", "not UTF-8 JSON"),
        ("[1, 2]", "has no log_history list"),
        ('{"log_history": 3}', "has no log_history list"),
    ],
)
def test_a_broken_newest_file_is_a_problem_line_never_an_exception(trained: tuple[Path, dict], tmp_path: Path, content, problem: str) -> None:
    run_dir, _ = trained
    path = tmp_path / "run" / "checkpoint-9" / "trainer_state.json"
    path.parent.mkdir(parents=True)
    if content == "cut":
        whole = (run_dir / "out" / "trainer_state.json").read_bytes()
        content = whole[: len(whole) // 2]
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    got = extract(tmp_path, tmp_path / "run", 0, metric_backend="hf-trainer")
    assert got.metrics == {} and problem in got.problem and str(path) in got.problem


def test_auto_finds_trainer_state_before_the_other_backends(trained: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, record = trained
    shutil.copytree(run_dir / "out", tmp_path / "run" / "out")
    (tmp_path / "run" / "run.log").write_text("eval_loss=99\n")
    got = extract(tmp_path, tmp_path / "run", 0, metric_backend="auto")
    assert got.source == "hf-trainer" and got.metrics == last_values(record["final"])


TRAIN_PY = TINY_TRAINER + """
import json
run_dir = os.environ["AR_RUN_DIR"]
trainer, _, _ = train(os.path.join(run_dir, "hf"), max_steps=6, save_steps=3)
with open(os.path.join(run_dir, "record.json"), "w") as f:
    json.dump(trainer.state.log_history, f)
"""


def test_hf_trainer_backend_end_to_end(tmp_path: Path, hosts_python: Path) -> None:
    project = Project(tmp_path)
    project.ar("init", "--example", "--expr", "exp", "--goal", "g", "--primary-metric", "eval_loss", "--primary-direction", "min",
               "--seconds", "240", "--metric-backend", "hf-trainer", "--runner", f"{hosts_python} {{train_py}}", check=True)
    project.write_train(TRAIN_PY)
    done = project.ar("run", env=clean_env(HF_HUB_OFFLINE="1", WANDB_MODE="disabled"), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = project.result("r0001")
    history = json.loads((project.expr / "runs" / "r0001" / "record.json").read_text())
    assert result["metric_source"] == "hf-trainer" and result["verdict"] == "advance", result
    assert result["primary"]["value"] == [e for e in history if "eval_loss" in e][-1]["eval_loss"]
    # The newest checkpoint (checkpoint-6) is read: no save_state(), so no train summary
    assert "train_loss" not in result["metrics"] and result["metrics"]["loss"] == [e for e in history if "loss" in e][-1]["loss"]
