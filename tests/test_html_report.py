"""`ar report --html FILE.html`, the morning page, opened in a real headless browser (Debian's
chromium): its DOM holds the runs table and a diff per kept change, and it renders."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Project, make_project

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Offline and quiet: no background traffic on this closed network, a throwaway profile.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-extensions"]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("chromium is not installed (.ci/run installs Debian's)")
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def experiment(tmp_path: Path) -> Project:
    project = make_project(tmp_path / "proj")
    project.train_py.write_text("RUN_NOTE = 'baseline'\nLR = 0.5\nprint(f'val_loss={abs(LR - 0.1) + 1:.4f}')\n")
    steps = [[], ["--set", "LR=0.3", "--note", "lr 0.3 <b>not bold</b>"], ["--set", "LR=0.9", "--note", "lr 0.9"],
             ["--set", "LR=0.2", "--note", "lr 0.2"]]
    for args in steps:
        assert project.ar("run", *args).returncode == 0
    project.train_py.write_text(project.train_py.read_text() + "raise SystemExit(2)\n")
    assert project.ar("run", "--note", "a crash").returncode == 0
    return project


def test_morning_page_in_a_real_browser(tmp_path: Path) -> None:
    project = experiment(tmp_path)
    page = tmp_path / "page" / "morning.html"
    done = project.ar("report", "--html", str(page))
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith(f"page: {page}")
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text  # self-contained
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    rows = re.findall(r"<tr class=\"(\w+)\"><td>(r\d{4})</td>", html)
    assert [run for _, run in rows] == ["r0001", "r0002", "r0003", "r0004", "r0005"]
    assert [verdict for verdict, _ in rows] == ["advance", "advance", "revert", "advance", "crash"]
    assert "lr 0.3 &lt;b&gt;not bold&lt;/b&gt;" in html  # notes are text, never markup
    diffs = re.findall(r"<h3 id=\"diff-(r\d{4})\">", html)
    assert diffs == ["r0001", "r0002", "r0004"]
    assert '<span class="add">+LR = 0.2' in html and '<span class="del">-LR = 0.3' in html
    assert re.search(r"<img alt=\"progress of exp\" src=\"data:image/png;base64,[A-Za-z0-9+/=]{2000,}\">", html)

    shot = tmp_path / "page.png"
    done = chromium(tmp_path, "--window-size=1200,1800", f"--screenshot={shot}", page.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    assert shot.stat().st_size > 50_000  # a page with a table, a plot and diffs, not a blank one
