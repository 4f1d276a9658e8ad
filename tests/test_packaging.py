"""Manifests, the CI script, and what `ar` imports at start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO, Project

HEAVY = ("torch", "wandb", "tensorboard", "numpy", "pydantic", "rich")


def test_top_level_manifest_equals_the_plugin_manifest() -> None:
    top = json.loads((REPO / "plugin.json").read_text())
    assert top == json.loads((REPO / ".claude-plugin" / "plugin.json").read_text())
    assert top["name"] == "autoresearch" and top["version"]


def test_marketplace_lists_this_plugin_from_the_repo_root() -> None:
    market = json.loads((REPO / ".claude-plugin" / "marketplace.json").read_text())
    (entry,) = market["plugins"]
    assert entry["name"] == json.loads((REPO / "plugin.json").read_text())["name"]
    assert entry["source"] == "./"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "uv run pytest" in readme and ci.rstrip().splitlines()[-1] == "uv run pytest"


def test_no_heavy_library_is_imported_by_a_command(project: Project) -> None:
    for args in (["status"], ["status", "--last", "3"], ["session"], ["report"]):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "ar", *args], cwd=project.root, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if line.startswith("import time:")}
        assert not imported & set(HEAVY), (args, imported & set(HEAVY))


def test_python_dash_m_and_console_script_agree(project: Project) -> None:
    script = Path(sys.executable).with_name("ar")
    via_script = subprocess.run([str(script), "status"], cwd=project.root, capture_output=True, text=True)
    via_module = project.ar("status")
    assert via_script.returncode == via_module.returncode == 0
    assert via_script.stdout == via_module.stdout
