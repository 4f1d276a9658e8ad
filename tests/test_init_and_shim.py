"""`ar init` scaffolding and the shim the agent calls (`uv run python .autoresearch/ar.py`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Project, clean_env, make_project


def test_init_writes_the_experiment(tmp_path: Path) -> None:
    project = make_project(tmp_path, "--constraints", "mem_gb<=10", "--mutation-scope", "optimizer only")
    expr = project.expr
    for name in ("program.md", "prepare.py", "train.py", "train.py.baseline", "results.tsv", ".ar-session.json", ".ar-state.json"):
        assert (expr / name).is_file(), name
    assert (expr / "runs").is_dir()
    assert (expr / "train.py").read_bytes() == (expr / "train.py.baseline").read_bytes()
    assert (expr / "results.tsv").read_text().startswith("run_id\tstarted_at\t")
    program = (expr / "program.md").read_text()
    assert "mem_gb<=10" in program and "optimizer only" in program and "val_loss" in program
    chain = json.loads((tmp_path / ".autoresearch" / ".chain-session.json").read_text())
    assert chain["current_slug"] == "exp"
    assert os.access(tmp_path / ".autoresearch" / "ar.py", os.X_OK)
    # the scaffolded train.py is runnable and reports the primary metric
    done = subprocess.run([sys.executable, str(expr / "train.py")], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1].startswith("val_loss=")


def test_init_is_valid_for_any_goal_and_metric_text(tmp_path: Path) -> None:
    goal = 'it\'s a "goal" with \\backslashes\\, a\nnewline, ünïcødé 🚀 and """triple""" quotes'
    metric = 'val"loss\'ü\\x'
    project = Project(tmp_path)
    project.ar("init", "--example", "--expr", "exp", "--goal", goal, "--primary-metric", metric, "--primary-direction", "max",
               "--log-pattern", "{name}=(?P<value>\\S+)", check=True)
    for name in ("train.py", "prepare.py"):
        compile((project.expr / name).read_text(encoding="utf-8"), name, "exec")
    assert goal.strip() in (project.expr / "program.md").read_text(encoding="utf-8")
    ns: dict = {}
    exec(compile((project.expr / "train.py").read_text(encoding="utf-8").split("import random")[0], "t", "exec"), ns)
    assert ns["PRIMARY_METRIC"] == metric and ns["DIRECTION"] == "max"


def test_second_experiment_becomes_current(tmp_path: Path) -> None:
    first = make_project(tmp_path, slug="first")
    make_project(tmp_path, slug="second")
    status = first.ar("status", check=True).stdout
    assert status.startswith("expr second:")
    assert first.ar("status", "--expr", "first", check=True).stdout.startswith("expr first:")


def _site_packages(python: Path) -> list[str]:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True)
    return sorted(os.listdir(out.stdout.strip()))


def test_shim_runs_ar_from_an_environment_without_its_dependencies(project: Project, bare_python: Path) -> None:
    before = _site_packages(bare_python)
    shim = [str(bare_python), ".autoresearch/ar.py"]
    done = subprocess.run([*shim, "status", "--compact"], cwd=project.root, env=clean_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("expr exp:")
    # exit codes pass through: usage error 2, refused run 1
    assert subprocess.run([*shim, "no-such-command"], cwd=project.root, env=clean_env(), capture_output=True).returncode == 2
    (project.expr / "prepare.py").write_text("# edited\n")
    refused = subprocess.run([*shim, "run"], cwd=project.root, env=clean_env(), capture_output=True, text=True)
    assert refused.returncode == 1 and "prepare.py changed" in refused.stderr
    assert _site_packages(bare_python) == before  # the project's environment is never modified


def test_shim_uses_the_project_interpreter_for_runs(project: Project, bare_python: Path) -> None:
    project.write_train("import sys\nprint('exe', sys.executable)\nprint('val_loss=1.0')\n")
    done = subprocess.run([str(bare_python), ".autoresearch/ar.py", "run"], cwd=project.root, env=clean_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    log = (project.expr / "runs" / "r0001" / "run.log").read_text()
    assert f"exe {bare_python}" in log


def test_shim_through_uv_run_in_a_uv_project(project: Project) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    (project.root / "pyproject.toml").write_text('[project]\nname = "host"\nversion = "0"\nrequires-python = ">=3.10"\ndependencies = []\n')
    env = clean_env()
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run([uv, "run", "--quiet", "python", ".autoresearch/ar.py", "status"], cwd=project.root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("expr exp:")


def test_messages_name_the_shim_when_ar_was_started_through_it(project: Project, bare_python: Path) -> None:
    """In an agent's shell bare `ar` is binutils: hints must show the command the agent can type."""
    project.write_train("import time\ntime.sleep(2)\nprint('val_loss=1')\n")
    shim = [str(bare_python), ".autoresearch/ar.py"]
    waiting = subprocess.run([*shim, "run", "--wait", "0.3"], cwd=project.root, env=clean_env(), capture_output=True, text=True)
    assert waiting.returncode == 3
    assert "`uv run python .autoresearch/ar.py wait --wait 540`" in waiting.stdout
    busy = subprocess.run([*shim, "run"], cwd=project.root, env=clean_env(), capture_output=True, text=True)
    assert busy.returncode == 5 and "`uv run python .autoresearch/ar.py wait --wait 540`" in busy.stderr
    assert "`autoresearch wait --wait 540`" in project.ar("wait", "--wait", "0.1").stdout  # started directly: the console script
    subprocess.run([*shim, "wait"], cwd=project.root, env=clean_env(), capture_output=True, check=True)


def test_gitignore_keeps_runs_checkpoints_and_state_out_of_git(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    project.write_train("import os\nopen(os.path.join(os.environ['AR_CKPT_DIR'], 'model.pt'), 'wb').write(b'w' * 1000)\nprint('val_loss=1.0')\n")
    assert project.ar("run").returncode == 0
    assert (project.expr / "best_ckpt").is_dir() and (project.expr / "runs" / "r0001" / "run.log").is_file()
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    staged = subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert sorted(staged) == sorted(f".autoresearch/{name}" for name in (
        ".gitignore", "ar.py", "exp/.ar-session.json", "exp/best.json", "exp/prepare.py",
        "exp/program.md", "exp/results.tsv", "exp/train.py", "exp/train.py.baseline",
    ))


def test_shim_whose_interpreter_is_gone_heals_through_the_source(project: Project, bare_python: Path) -> None:
    """The interpreter it names was removed (a venv rebuilt elsewhere): the shim runs ar with
    `uv run --project <source>` and ar rewrites the shim to the interpreter it ran under."""
    if shutil.which("uv") is None:
        pytest.skip("uv is not on PATH")
    shim = project.root / ".autoresearch" / "ar.py"
    text = shim.read_text()
    assert f"AR_PYTHON = {sys.executable!r}" in text
    shim.write_text(text.replace(f"AR_PYTHON = {sys.executable!r}", "AR_PYTHON = '/gone/venv/bin/python'"))
    env = {k: v for k, v in clean_env().items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    done = subprocess.run([str(bare_python), ".autoresearch/ar.py", "status"], cwd=project.root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("expr exp:"), done.stderr
    assert "/gone/" not in shim.read_text() and "AR_PYTHON = '" in shim.read_text()
