"""ar's stdlib metric readers against importing the libraries that wrote the files.
Run: `uv run python bench/bench_backends.py [--repeats 5] [--steps 200] [--python PATH]`.

Builds its inputs in a temp dir with the real libraries, run by the host interpreter (`--python`; by
default the tests' hosts env, tests/conftest.py HOST_STACK, built on first use): a tiny config-built
GPT-2 trained by the HF Trainer (`save_state()` writes trainer_state.json), a tiny LightningModule fit
with a CSVLogger (metrics.csv), and an MLflow run logged to a SQLite store. No downloads: HF_HUB_OFFLINE=1,
report_to="none", WANDB_MODE=disabled.

Then times fresh processes, each N times after one warm-up (so the page cache is warm), interleaved so
drift on a noisy machine hits all alike: `python -c pass` and the libraries' imports (plus their own
read of the file) in the host env; `python -c pass` and ar's readers (`import ar.metrics.<reader>`
included) in ar's env. Wall time of the whole process, from spawn to exit. Prints a Markdown table, median
and min, and whether each reader got the values the library records.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TRANSFORMERS_VERBOSITY": "error"}

# Run once by the host interpreter: argv[1] the temp dir, argv[2] the steps. Prints what each library
# recorded, as its last stdout line: Lightning's logged dicts (the CSV writer's rows), for the lightning-csv check.
WRITE = r"""
import json, os, sys, warnings
warnings.filterwarnings("ignore")
import torch

root, steps = sys.argv[1], int(sys.argv[2])


def write_hf(output_dir):
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            ids = torch.tensor([(i + j) % 32 for j in range(8)])
            return {"input_ids": ids, "labels": ids}

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=32, n_positions=16))
    args = TrainingArguments(output_dir=output_dir, max_steps=steps, logging_steps=1, eval_strategy="steps",
                             eval_steps=max(1, steps // 10), save_strategy="no", per_device_train_batch_size=4,
                             report_to="none", use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(), eval_dataset=Tokens())
    trainer.train()
    trainer.save_state()  # output_dir/trainer_state.json


def write_lightning(save_dir):
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
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    x = torch.randn(32, 4)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    logger = RecordingCSVLogger(save_dir)
    trainer = L.Trainer(max_epochs=max(1, steps // 4), logger=logger, log_every_n_steps=1, accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(Regression(), data, data)
    last = {}
    for entry in logger.logged:
        last.update(entry)
    return last


def write_mlflow(db):
    import mlflow

    mlflow.set_tracking_uri("sqlite:///" + db)
    with mlflow.start_run():
        for step in range(steps):
            mlflow.log_metrics({"train_loss": 2.0 / (step + 1), "val_loss": 1.0 / (step + 1)}, step=step)


write_hf(os.path.join(root, "hf"))
lightning = write_lightning(os.path.join(root, "lightning"))
write_mlflow(os.path.join(root, "mlflow.db"))
print(json.dumps({"lightning": lightning}))
"""

# What each timed process runs, with the file as argv[1]; the readers print what they read, for the checks.
LOAD_HF = "import json, sys; from transformers import TrainerState; print(json.dumps(TrainerState.load_from_json(sys.argv[1]).log_history))"
LOAD_MLFLOW = (
    "import json, sys, mlflow; mlflow.set_tracking_uri('sqlite:///' + sys.argv[1]);"
    "run = mlflow.search_runs(output_format='list', max_results=1)[0];"
    "print(json.dumps(mlflow.MlflowClient().get_run(run.info.run_id).data.metrics))"
)
AR_HF = "import json, sys; from pathlib import Path; from ar.metrics.hf_trainer import read_trainer_state; print(json.dumps(read_trainer_state(Path(sys.argv[1]))))"
AR_CSV = "import json, sys; from pathlib import Path; from ar.metrics.lightning_csv import read_metrics_csv; print(json.dumps(read_metrics_csv(Path(sys.argv[1]))))"
AR_MLFLOW = (
    "import json, sys; from ar.metrics.mlflow_store import Store, read_mlflow;"
    "print(json.dumps(read_mlflow(Store('sqlite', sys.argv[1], True), 0, {})))"
)


def hosts_python() -> Path:
    """The tests' hosts env (built on first use, minutes)."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import HOST_STACK
    from stack_env import build

    return build("hosts", HOST_STACK, compile_bytecode=True)


def run(python: str, code: str, *args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | ENV
    done = subprocess.run([python, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"`{code[:60]}...` exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5, help="timed processes per case, after one warm-up")
    parser.add_argument("--steps", type=int, default=200, help="training steps logged by each library")
    parser.add_argument("--python", type=Path, help="host interpreter with transformers, lightning, mlflow (default: the tests' hosts env)")
    args = parser.parse_args()
    hosts = str(args.python or hosts_python())
    ar = sys.executable
    with tempfile.TemporaryDirectory(prefix="ar-bench-backends-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        written = json.loads(run(hosts, WRITE, str(root), str(args.steps), cwd=root).splitlines()[-1])  # the Trainer prints its logs
        build_s = time.perf_counter() - t
        state = root / "hf" / "trainer_state.json"
        (csv_path,) = (root / "lightning").glob("**/metrics.csv")
        db = root / "mlflow.db"
        cases = [  # (name, interpreter label, python, code, file)
            ("`python -c pass`", "hosts", hosts, "pass", None),
            ("`import transformers`", "hosts", hosts, "import transformers", None),
            ("`import transformers` + `TrainerState.load_from_json`", "hosts", hosts, LOAD_HF, state),
            ("`import lightning`", "hosts", hosts, "import lightning", None),
            ("`import mlflow`", "hosts", hosts, "import mlflow", None),
            ("`import mlflow` + `search_runs` + `get_run` (SQLite)", "hosts", hosts, LOAD_MLFLOW, db),
            ("`python -c pass`", "ar", ar, "pass", None),
            ("ar `read_trainer_state` (hf-trainer)", "ar", ar, AR_HF, state),
            ("ar `read_metrics_csv` (lightning-csv)", "ar", ar, AR_CSV, csv_path),
            ("ar `read_mlflow` (mlflow, SQLite)", "ar", ar, AR_MLFLOW, db),
        ]
        outputs = [run(python, code, *([str(f)] if f else []), cwd=root) for _, _, python, code, f in cases]  # warm-up
        times: list[list[float]] = [[] for _ in cases]
        for _ in range(args.repeats):
            for i, (_, _, python, code, f) in enumerate(cases):
                t = time.perf_counter()
                run(python, code, *([str(f)] if f else []), cwd=root)
                times[i].append(time.perf_counter() - t)
        sizes = (len(json.loads(outputs[2])), len(csv_path.read_text().splitlines()) - 1, state.stat().st_size, csv_path.stat().st_size)

    from ar.metrics.hf_trainer import last_values

    got = {name: json.loads(out) for (name, *_), out in zip(cases, outputs) if out.strip()}
    hf_lib, mlflow_lib = last_values(got[cases[2][0]]), got[cases[5][0]]
    right = {
        cases[7][0]: same(got[cases[7][0]], hf_lib),
        cases[8][0]: same(got[cases[8][0]], written["lightning"]),
        cases[9][0]: same(got[cases[9][0]], mlflow_lib),
    }
    med = [statistics.median(ts) for ts in times]
    base = {"hosts": med[0], "ar": med[6]}
    print(f"Inputs written by the real libraries in {build_s:.0f} s, {args.steps} steps each: trainer_state.json "
          f"{sizes[0]} log_history entries ({sizes[2] / 1024:.0f} KiB), metrics.csv {sizes[1]} rows ({sizes[3] / 1024:.0f} KiB), "
          f"mlflow.db one run, {2 * args.steps} metric points. Fresh processes, {args.repeats} timed after a warm-up.\n")
    print(f"hosts: `{hosts}`; ar: `{ar}`\n")
    print("| process | env | median | min | median over `pass` | values right |\n|---|---|---:|---:|---:|---|")
    for i, (name, env, *_) in enumerate(cases):
        check = "yes" if right.get(name) else "NO" if name in right else ""
        print(f"| {name} | {env} | {med[i] * 1000:,.0f} ms | {min(times[i]) * 1000:,.0f} ms "
              f"| {(med[i] - base[env]) * 1000:,.0f} ms | {check} |")
    print()
    for lib, ar_i, lib_i in (("transformers", 7, 2), ("lightning", 8, 3), ("mlflow", 9, 5)):
        print(f"- {cases[ar_i][0]}: {med[ar_i] * 1000:,.0f} ms vs {cases[lib_i][0]} {med[lib_i] * 1000:,.0f} ms, "
              f"{med[lib_i] / med[ar_i]:,.0f}x faster")
    print("\nvalues right: ar's reader gives the library's own record (hf-trainer: the last value of each key over "
          "TrainerState's log_history; lightning-csv: the dicts Lightning logged; mlflow: `get_run(...).data.metrics`).")


if __name__ == "__main__":
    main()
