"""Manifests, the CI script, and what `ar` imports at start-up."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import REPO, Project

HEAVY = ("torch", "wandb", "tensorboard", "numpy", "pydantic", "rich", "matplotlib")


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
    script = Path(sys.executable).with_name("autoresearch")
    via_script = subprocess.run([str(script), "status"], cwd=project.root, capture_output=True, text=True)
    via_module = project.ar("status")
    assert via_script.returncode == via_module.returncode == 0
    assert via_script.stdout == via_module.stdout


def test_the_console_script_is_not_named_ar() -> None:
    """`ar` is binutils' archiver: a script of that name earlier on PATH breaks C builds."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert set(pyproject["project"]["scripts"]) == {"autoresearch"}
    assert not Path(sys.executable).with_name("ar").exists()


def test_version_matches_the_package_and_the_plugin() -> None:
    done = subprocess.run([sys.executable, "-m", "ar", "--version"], capture_output=True, text=True, check=True)
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert done.stdout == f"autoresearch {version}\n"
    assert json.loads((REPO / "plugin.json").read_text())["version"] == version


def _help(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "ar", *args, "--help"], capture_output=True, text=True, check=True).stdout


def test_top_level_help_gives_each_command_one_whole_line() -> None:
    listing = _help().split("Commands:\n", 1)[1].splitlines()
    names = sorted(line.split()[0] for line in listing if line.strip())
    assert names == sorted(cli_commands())
    for line in listing:
        assert line.startswith("  ") and len(line.split(None, 1)) == 2, line  # no wrapped continuation
        assert not line.rstrip().endswith("..."), line


def test_help_has_no_negated_one_way_flags_and_marks_required_ones() -> None:
    for command in cli_commands():
        text = _help(command)
        assert "--no-" not in text, (command, text)
    chain = _help("chain-init")
    for flag in ("--new-slug", "--rationale"):
        block = chain.split(flag, 1)[1].split("\n  --", 1)[0]
        assert "[required]" in block, (flag, block)


def test_a_usage_error_is_one_line_naming_the_help() -> None:
    done = subprocess.run([sys.executable, "-m", "ar", "rcs", "libx.a", "x.o"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "ar: No such command 'rcs'. (fix: see `autoresearch --help`)\n"
    done = subprocess.run([sys.executable, "-m", "ar", "chain-init", "--rationale", "x"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == "ar: Missing option '--new-slug'. (fix: see `autoresearch chain-init --help`)\n"


def cli_commands() -> list[str]:
    import typer.main

    from ar.cli import app

    return list(typer.main.get_command(app).commands)
