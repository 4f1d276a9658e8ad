"""`ar run --set NAME=VALUE --note TEXT`: knobs changed in place, in one shell call."""

from __future__ import annotations

import pytest

from conftest import Project, printing

from ar.errors import ArError
from ar.knobs import apply_settings, parse_settings

SOURCE = '''RUN_NOTE = "baseline"  # what this version tries
LEARNING_RATE = 0.005  # keep this comment
EPOCHS: int = 10
NAME = "ünï"; LAYERS = [64, 64]
SCHEDULE = {"warmup": 100,
            "decay": 0.9}
COMPUTED = LEARNING_RATE * 2

def main():
    EPOCHS = 3  # not top level: untouched
'''


def test_constants_change_in_place_and_nothing_else_does() -> None:
    settings = parse_settings(["LEARNING_RATE=3e-4", "EPOCHS=20", "NAME='x y'", "LAYERS=[128, 128, 64]",
                               "SCHEDULE={'warmup': 10}"])
    out = apply_settings(SOURCE, settings, "lr 3e-4, wider")
    assert out.splitlines() == [
        "RUN_NOTE = 'lr 3e-4, wider'  # what this version tries",
        "LEARNING_RATE = 0.0003  # keep this comment",
        "EPOCHS: int = 20",
        "NAME = 'x y'; LAYERS = [128, 128, 64]",
        "SCHEDULE = {'warmup': 10}",
        "COMPUTED = LEARNING_RATE * 2",
        "",
        "def main():",
        "    EPOCHS = 3  # not top level: untouched",
    ]
    namespace: dict = {}
    exec(compile(out.split("def main")[0], "train.py", "exec"), namespace)
    assert namespace["LEARNING_RATE"] == 3e-4 and namespace["LAYERS"] == [128, 128, 64]


def test_a_note_is_added_when_there_is_none() -> None:
    assert apply_settings("X = 1\n", {}, "first\nline") == "RUN_NOTE = 'first line'\nX = 1\n"


@pytest.mark.parametrize("pairs, words", [
    (["NOPE=1"], "no top-level constant NOPE"),
    (["COMPUTED=1"], "not a literal constant"),
    (["main=1"], "no top-level constant main"),
])
def test_names_that_are_not_constants_are_refused(pairs: list[str], words: str) -> None:
    with pytest.raises(ArError, match=words):
        apply_settings(SOURCE, parse_settings(pairs), None)


@pytest.mark.parametrize("pair, words", [("EPOCHS", "not NAME=VALUE"), ("1X=2", "not NAME=VALUE"),
                                         ("OPT=adam", "not a Python literal"), ("LR=__import__('os')", "not a Python literal")])
def test_values_that_are_not_literals_are_refused(pair: str, words: str) -> None:
    with pytest.raises(ArError, match=words):
        parse_settings([pair])


def test_run_sets_knobs_before_the_snapshot(project: Project) -> None:
    project.train_py.write_text('RUN_NOTE = "base"\nVALUE = 1.0\nprint(f"val_loss={VALUE}")\n')
    done = project.ar("run", "--set", "VALUE=0.5", "--note", "half")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("launched r0001") and ": half" in done.stdout.splitlines()[0]
    snapshot = (project.expr / "runs" / "r0001" / "train.py").read_text()
    assert snapshot == "RUN_NOTE = 'half'\nVALUE = 0.5\nprint(f\"val_loss={VALUE}\")\n"
    assert project.result("r0001")["primary"]["value"] == 0.5 and project.result("r0001")["note"] == "half"
    before = project.train_py.read_bytes()
    refused = project.ar("run", "--set", "NOPE=1")
    assert refused.returncode == 1 and "no top-level constant NOPE" in refused.stderr
    assert project.train_py.read_bytes() == before and len(project.rows()) == 1
