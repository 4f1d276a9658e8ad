"""What the agent reads each iteration stays within its budget (BENCHMARKS.md has the figures)."""

from __future__ import annotations

import sys

from conftest import REPO, Project

sys.path.insert(0, str(REPO / "bench"))
import run as bench  # noqa: E402

BYTES_PER_ITERATION = 600


def test_steady_state_iteration_reads_under_600_bytes(project: Project) -> None:
    root = project.root / "budget"
    root.mkdir()
    figures = bench.bytes_per_iteration(root, iterations=3)
    assert figures["per_iteration_bytes"] < BYTES_PER_ITERATION, figures


def test_status_and_run_line_budgets(project: Project) -> None:
    project.ar("session", "--max-runs", "9", "--plateau", "4", "--threshold", "0.01", "--chain-mode", "unlimited", check=True)
    for value in ("0.5", "0.4", "nan"):
        project.write_train(f"print('val_loss={value}')\n", note="x" * 300)
        out = project.ar("run").stdout.splitlines()
        assert len(out) <= 3 and all(len(line) <= 400 for line in out), out
    (project.expr / ".ar-unclean").write_text('{"run_id": "r0003", "pids": []}')
    status = project.ar("status", "--compact", check=True).stdout.splitlines()
    assert len(status) <= 10 and all(len(line) <= 120 for line in status), status
