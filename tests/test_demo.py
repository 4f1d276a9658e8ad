"""`ar demo`, the main job: five real iterations through `ar run`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_demo_drives_every_kind_of_iteration(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "ar", "demo", "--dir", str(tmp_path / "demo")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    verdicts = re.findall(r"^  verdict (\S+?)(?: \||$)", done.stdout, re.M)
    assert verdicts == ["ok/advance", "ok/advance", "ok/revert", "crash/crash", "timeout/timeout"]
    assert "train.py in sync with best r0002" in done.stdout
    assert "# Report: demo-lr-search" in done.stdout
    expr = tmp_path / "demo" / ".autoresearch" / "demo-lr-search"
    assert (expr / "train.py").read_bytes() == (expr / "runs" / "r0002" / "train.py").read_bytes()
    assert len((expr / "results.tsv").read_text().splitlines()) == 6


def test_demo_refuses_a_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    done = subprocess.run([sys.executable, "-m", "ar", "demo", "--dir", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 1 and "not empty" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
