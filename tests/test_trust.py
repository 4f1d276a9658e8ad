"""Verdicts you can trust: the mutation budget and the diff size of every run (real `ar run`s on
real train.py diffs)."""

from __future__ import annotations

from pathlib import Path

from conftest import Project, make_project
from test_bad_inputs import assert_one_line_error


def test_every_row_and_result_carries_the_diff_against_the_train_py_it_started_from(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    project.ar("run", check=True)
    project.ar("run", "--set", "LEARNING_RATE=0.05", "--note", "lr", check=True)  # advances: the knob and RUN_NOTE, +2 -2 against r0001
    text = project.train_py.read_text()
    project.train_py.write_text(text.replace("RUN_NOTE = 'lr'", "RUN_NOTE = 'two lines'") + "X = 1\nY = 2\n")
    project.ar("run", check=True)
    assert [project.result(r)["diff"] for r in ("r0001", "r0002", "r0003")] == ["+0 -0", "+2 -2", "+3 -1"]
    assert [row[-1] for row in project.rows()] == ["+0 -0", "+2 -2", "+3 -1"]


def test_a_train_py_over_the_mutation_budget_is_refused_before_launch(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    project.ar("session", "--max-changed-lines", "2", check=True)
    project.ar("run", check=True)  # the first run is the baseline: never measured against a template
    edited = project.train_py.read_text() + "A = 1\nB = 2\nC = 3\n"
    project.train_py.write_text(edited)
    line = assert_one_line_error(project.ar("run"), "3 lines", "+3 -0", "r0001", "mutation budget is 2")
    assert "--max-changed-lines" in line
    assert len(project.rows()) == 1 and not (project.expr / "runs" / "r0002").exists()
    assert project.train_py.read_text() == edited  # nothing lost: the agent trims its own edit
    project.train_py.write_text(edited.replace("C = 3\n", ""))
    assert project.ar("run").returncode == 0
    project.ar("session", "--max-changed-lines", "0", check=True)  # lifted
    project.train_py.write_text(project.train_py.read_text() + "".join(f"V{i} = {i}\n" for i in range(9)))
    assert project.ar("run").returncode == 0
    assert Project(tmp_path).result("r0003")["diff"] == "+9 -0"
