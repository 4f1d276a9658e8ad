"""`ar status`, `ar tail`, `ar report`: short, capped, and flat in history size."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Project, make_project, printing

from ar import results_log


def _history(project: Project, runs: int) -> None:
    """A results.tsv of `runs` rows, as a long loop leaves it (rows only; counters are rebuilt)."""
    rows = []
    for n in range(1, runs + 1):
        verdict = "advance" if n % 97 == 1 else ("crash" if n % 13 == 0 else "revert")
        status = "crash" if verdict == "crash" else "ok"
        value = "" if status == "crash" else f"{1.0 / n:.6f}"
        note = f"try {n}: " + "a long note about the change " * 6
        rows.append("\t".join([f"r{n:04d}", "2026-11-22T00:00:00Z", "1.00", status, verdict, "val_loss", value, "true", str(verdict == "advance").lower(), note[:200]]))
    (project.expr / "results.tsv").write_text(results_log.HEADER + "\n" + "\n".join(rows) + "\n")
    (project.expr / ".ar-state.json").unlink()  # the next command rebuilds it from the rows


def test_status_compact_fits_ten_lines_in_every_state(project: Project) -> None:
    out = project.ar("status", "--compact", check=True).stdout
    assert out.startswith("expr exp: min val_loss") and "best none yet" in out
    project.write_train(printing("0.5"), note="first")
    project.ar("run", check=True)
    project.ar("session", "--max-runs", "2", "--plateau", "3", "--chain-mode", "unlimited", check=True)
    project.write_train("raise SystemExit(1)\n", note="broken")
    project.ar("run")
    lines = project.ar("status", "--compact", check=True).stdout.splitlines()
    assert len(lines) <= 10
    text = "\n".join(lines)
    assert "best 0.5 r0001" in text
    assert "runs 2: 1 advance, 1 crash" in text
    assert "max_runs 2/2, plateau 0/3" in text
    assert "train.py in sync with best r0001" in text
    assert "TERMINATED by max_runs" in text
    project.train_py.write_text(project.train_py.read_text() + "\n# an edit\n")
    assert "train.py differs from best r0001" in project.ar("status", check=True).stdout


def test_status_last_and_json(project: Project) -> None:
    for n, value in enumerate(["0.9", "0.7", "0.8"]):
        project.write_train(printing(value), note=f"note {n}\twith tab")
        project.ar("run", check=True)
    last = project.ar("status", "--last", "2", check=True).stdout.splitlines()
    assert last == ["r0002 advance 0.7 note 1 with tab", "r0003 revert 0.8 note 2 with tab"]
    data = json.loads(project.ar("status", "--json", "--last", "1", check=True).stdout)
    assert data["best"] == {"run_id": "r0002", "value": 0.7, "checkpoint": None}
    assert data["counts"] == {"advance": 2, "revert": 1}
    assert [r["run_id"] for r in data["last_runs"]] == ["r0003"]


def test_tail_focuses_on_the_last_traceback(project: Project) -> None:
    noise = "print('step', 1)\n" * 300
    project.write_train(noise + "def f():\n    raise ValueError('boom at the end')\nf()\n", note="crash")
    project.ar("run")
    out = project.ar("tail", "--run", "r0001", "--lines", "8", check=True).stdout.splitlines()
    assert len(out) <= 8
    assert out[0].startswith("Traceback (most recent call last)")
    assert out[-1] == "ValueError: boom at the end"
    assert project.ar("tail", check=True).stdout.splitlines()[-1] == "ValueError: boom at the end"  # default: last run
    bad = project.ar("tail", "--run", "r0099")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1


def test_report_is_bounded_whatever_the_history(tmp_path: Path) -> None:
    sizes = {}
    for runs in (10, 10_000):
        project = make_project(tmp_path / str(runs))
        _history(project, runs)
        report = project.ar("report", check=True).stdout
        assert "## Baseline vs best" in report and "## Kept changes" in report and "## Recent failures" in report
        sizes[runs] = len(report.encode())
        status = project.ar("status", "--compact", check=True).stdout
        assert f"runs {runs}:" in status  # counters rebuilt from results.tsv
    # the windows fill up, then the size stops growing: a few KB at most, whatever the history
    assert sizes[10_000] < 2.5 * sizes[10] and sizes[10_000] < 6000, sizes


def test_report_trend_is_the_running_best_and_failures_show_their_error(project: Project) -> None:
    for value in ("4.17", "0.145", "16.4"):  # advance, advance, a much worse revert
        project.write_train(printing(value), note=f"v {value}")
        assert project.ar("run").returncode == 0
    project.write_train("raise ValueError('the learning rate is negative')\n", note="bad lr")
    assert project.ar("run").returncode == 0
    report = project.ar("report", check=True).stdout
    trend = report.split("## Trend", 1)[1].splitlines()[1]
    assert trend == "r0001 4.17 -> r0002 0.145"  # the worse r0003 never shows as a step back
    assert "- r0004 crash: exited with code 1: ValueError: the learning rate is negative (bad lr)" in report
