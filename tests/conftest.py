"""Shared fixtures: real throwaway projects driven by the real `ar` in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from slurm_cluster import slurm_cluster  # noqa: F401  (one real cluster per session, for the Slurm tests)

REPO = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AR_")}
    env.update(extra)
    return env


@dataclass
class Project:
    root: Path
    slug: str = "exp"

    @property
    def expr(self) -> Path:
        return self.root / ".autoresearch" / self.slug

    @property
    def train_py(self) -> Path:
        return self.expr / "train.py"

    def ar(self, *args: str, env: dict | None = None, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "ar", *args],
            cwd=self.root,
            env=env or clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"ar {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def write_train(self, body: str, note: str = "test") -> None:
        """Replace train.py with a program that runs `body` (dedented); RUN_NOTE first."""
        self.train_py.write_text(f"RUN_NOTE = {note!r}\n" + textwrap.dedent(body), encoding="utf-8")

    def result(self, run_id: str) -> dict:
        return json.loads((self.expr / "runs" / run_id / "result.json").read_text())

    def rows(self) -> list[list[str]]:
        lines = (self.expr / "results.tsv").read_text().splitlines()
        return [line.split("\t") for line in lines[1:]]

    def best(self) -> dict | None:
        path = self.expr / "best.json"
        return json.loads(path.read_text()) if path.exists() else None


def make_project(root: Path, *init_args: str, slug: str = "exp") -> Project:
    root.mkdir(parents=True, exist_ok=True)
    project = Project(root, slug)
    args = ["init", "--example", "--expr", slug, "--goal", "test goal", "--primary-metric", "val_loss", "--primary-direction", "min", "--seconds", "20"]
    project.ar(*args, *init_args, check=True)
    return project


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


def printing(value: str) -> str:
    """A train.py body that prints val_loss=<value>."""
    return f"print('val_loss={value}')\n"


@pytest.fixture
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An interpreter without ar's dependencies, like a host project's own environment."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import typer"], capture_output=True)
    assert probe.returncode != 0, "the bare venv must not see ar's dependencies"
    return python


@pytest.fixture(scope="session")
def torch_python() -> Path:
    """An interpreter with torch, as a host project's environment has it (built once; see stack_env)."""
    from stack_env import stack_python

    return stack_python("torch", ["torch==2.13.0"])


# The real stacks the host projects under tests/hosts/ train with (pinned: their file formats are what
# the backends read). One environment for all of them, built once per machine.
HOST_STACK = [
    "torch==2.13.0",
    "transformers==5.24.0",
    "accelerate==1.15.0",
    "lightning==2.6.6",
    "hydra-core==1.3.8",
    "mlflow==3.17.2",
    "tensorboard==2.21.0",
    "wandb==0.31.0",
]


@pytest.fixture(scope="session")
def hosts_python() -> Path:
    """An interpreter with the host projects' stacks: transformers, accelerate, lightning, hydra, mlflow."""
    from stack_env import stack_python

    return stack_python("hosts", HOST_STACK, compile_bytecode=True)


def run_python(python: Path, code: str, *args: str) -> str:
    """stdout of `code` run by another interpreter (a host environment); fails the test on error."""
    done = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout
