"""`ar report --plot FILE.png` renders real experiments (a chain of two, with a noise floor) with
matplotlib, the optional extra; the picture's pixels show each kind of mark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Project, clean_env, make_project, printing

image = pytest.importorskip("matplotlib.image")

KEPT, DISCARDED, FAILED, BEST = (44, 160, 44), (158, 158, 158), (214, 39, 40), (31, 119, 180)


def pixels_near(png: Path, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    data = image.imread(str(png))[:, :, :3]
    rgb = (data * 255).round()
    return int((abs(rgb - colour).max(axis=2) <= tolerance).sum())


def run_values(project: Project, slug: str, values: list[str]) -> None:
    for value in values:
        body = "raise SystemExit(3)\n" if value == "crash" else printing(value)
        (project.root / ".autoresearch" / slug / "train.py").write_text(f"RUN_NOTE = 'try {value}'\n" + body)
        done = project.ar("run", "--expr", slug)
        assert done.returncode in (0, 4), done.stdout + done.stderr


def test_plot_of_a_chain_shows_kept_discarded_failed_and_the_best(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", slug="first")
    project.ar("session", "--chain-mode", "max_n", "--chain-max", "1", "--min-delta", "0.05", check=True)
    run_values(project, "first", ["1.0", "0.8", "0.9", "crash", "0.6"])
    project.ar("chain-init", "--from-expr", "first", "--new-slug", "second", "--rationale", "go on", check=True)
    run_values(project, "second", ["0.55", "0.7", "0.4"])
    png = tmp_path / "out" / "progress.png"
    done = project.ar("report", "--expr", "second", "--plot", str(png))
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith(f"plot: {png}") and "# Report: second" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    for name, colour in (("kept", KEPT), ("discarded", DISCARDED), ("failed", FAILED), ("best line", BEST)):
        assert pixels_near(png, colour) > 20, f"no {name} marks in the plot"


def test_plot_without_matplotlib_is_a_one_line_error(project: Project, tmp_path: Path) -> None:
    blocker = tmp_path / "block" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = clean_env(PYTHONPATH=str(blocker.parent))
    done = subprocess.run([sys.executable, "-m", "ar", "report", "--plot", str(tmp_path / "p.png")], cwd=project.root,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "needs matplotlib" in done.stderr and "plot" in done.stderr
    assert not (tmp_path / "p.png").exists()
