"""`ar smoke`: the current train.py under the watchdog, exactly as `ar run` launches it, recording
nothing: no run, no row, no best, no state; at most three lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Project


def snapshot(project: Project) -> dict[str, bytes]:
    return {str(p.relative_to(project.expr)): p.read_bytes() for p in sorted(project.expr.rglob("*"))
            if p.is_file() and p.name not in (".ar-lock", ".ar-books.lock")}


@pytest.mark.parametrize("body, code, words", [
    ("import os\nopen(os.path.join(os.environ['AR_CKPT_DIR'], 'm.pt'), 'w').write('w')\nprint('val_loss=0.25')\n", 0,
     ["exited 0", "val_loss=0.25 found (log)", "checkpoint saved ($AR_CKPT_DIR)"]),
    ("import time\nprint('val_loss=0.5', flush=True)\ntime.sleep(60)\n", 0,
     ["still running at 2s, stopped", "val_loss=0.5 found"]),
    ("print('warming up')\nraise RuntimeError('CUDA out of memory, say')\n", 1,
     ["exited with code 1", "val_loss not found", "error: RuntimeError: CUDA out of memory, say"]),
    ("print('no metric')\n", 1, ["exited 0", "val_loss not found (log)", "checkpoint none"]),
])
def test_smoke_reports_and_records_nothing(project: Project, body: str, code: int, words: list[str]) -> None:
    project.write_train(body, note="smoke")
    before = snapshot(project)
    done = project.ar("smoke", "--seconds", "2", timeout=60)
    assert done.returncode == code, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert 2 <= len(lines) <= 3 and lines[0].startswith("smoke: started"), lines
    for word in words:
        assert word in done.stdout, (word, done.stdout)
    assert snapshot(project) == before  # nothing recorded, nothing left behind
    assert not list(project.expr.glob(".ar-smoke-*"))


def test_smoke_refuses_while_a_run_is_going(project: Project) -> None:
    project.write_train("import time\ntime.sleep(3)\nprint('val_loss=1')\n")
    assert project.ar("run", "--wait", "0.2").returncode == 3
    busy = project.ar("smoke")
    assert busy.returncode == 5 and "still running" in busy.stderr
    assert project.ar("wait", timeout=60).returncode == 0
