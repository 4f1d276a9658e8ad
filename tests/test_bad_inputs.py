"""Hostile and broken inputs: odd logs, odd text in names and notes, invalid flags, damaged state.

Whatever goes in, `ar` answers with a result or with one line `ar: ... (fix: ...)`, never a
traceback, and an input it refuses leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project, clean_env, printing

PY = sys.executable


def ar_in(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "ar", *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=60, check=False)


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str, code: int = 1) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith("ar: ") and "fix:" in line, line
    for word in words:
        assert word in line, (word, line)
    return line


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run_ok(project: Project) -> subprocess.CompletedProcess:
    done = project.ar("run")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) <= 3
    return done


# ------------------------------------------------------------------------------------------ odd logs

HUGE = 20 << 20


@pytest.mark.parametrize("same_line", [True, False], ids=["metric-ends-the-huge-line", "metric-after-it"])
def test_non_utf8_and_a_20mb_line_before_the_metric(project: Project, same_line: bool) -> None:
    separator = b" " if same_line else b"\n"
    project.write_train(
        "import sys\n"
        "out = sys.stdout.buffer\n"
        "out.write(b'\\xff\\xfe\\x80 not utf-8 \\xc3\\x28 val_loss=\\xff acc=\\xe9\\n')\n"
        f"out.write(b'\\xe9\\x80' * 1000 + b'x' * {HUGE})  # 20 MB without a newline\n"
        f"out.write({separator!r} + b'val_loss=0.25 \\xff\\n')\n"
        "out.write(b'\\x00\\x01 acc=0.5 \\xfe\\n')\n"
        "out.flush()\n",
        "huge log",
    )
    done = run_ok(project)
    assert "Traceback" not in done.stderr
    result = project.result("r0001")
    assert (result["status"], result["verdict"]) == ("ok", "advance")
    assert result["primary"]["value"] == 0.25
    assert result["metrics"]["acc"] == 0.5
    assert (project.expr / "runs" / "r0001" / "run.log").stat().st_size > HUGE

    tail = project.ar("tail", "--run", "r0001")
    assert tail.returncode == 0 and "Traceback" not in tail.stderr
    assert 0 < len(tail.stdout.splitlines()) <= 30
    assert all(len(line) <= 240 for line in tail.stdout.splitlines())
    status = project.ar("status", "--last", "1")
    assert status.returncode == 0 and "r0001 advance 0.25" in status.stdout


# ------------------------------------------------------------------------------------ odd text in init

ODD_GOAL = 'say "hi" it\'s a \\ back\\slash\nsecond line\ttab """ \'\'\' ünïcödé 🚀 {x} %s __METRIC__ __GOAL__\n'


@pytest.mark.parametrize(
    "metric, extra",
    [
        ("val_loss", []),
        ("eval/loss.v-2", []),
        ('it\'s "m"\\x', ["--log-pattern", r"{name}=(\S+)"]),
        ("ünï 🚀 '''", ["--log-pattern", r"{name}=(\S+)"]),
        ("__DIRECTION__", []),
    ],
    ids=["plain", "path-like", "quotes-backslash", "unicode", "placeholder-like"],
)
def test_init_with_odd_goal_and_metric_names(tmp_path: Path, metric: str, extra: list[str]) -> None:
    done = ar_in(tmp_path, "init", "--example", "--expr", "odd", "--goal", ODD_GOAL, "--primary-metric", metric,
                 "--primary-direction", "max", "--mutation-scope", 'only "lr" \\ ünï', *extra)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "odd"
    expr = tmp_path / ".autoresearch" / "odd"
    for name in ("train.py", "prepare.py", "train.py.baseline"):
        source = (expr / name).read_text(encoding="utf-8")
        compile(source, name, "exec")
    namespace: dict = {}
    exec(compile((expr / "train.py").read_text(encoding="utf-8").split("import random")[0], "train.py", "exec"), namespace)  # noqa: S102 (the settings block of our own template)
    assert namespace["PRIMARY_METRIC"] == metric
    program = (expr / "program.md").read_text(encoding="utf-8")
    assert ODD_GOAL.strip() in program
    assert metric in program

    # the generated train.py really reports the metric under that name, and ar reads it back
    project = Project(tmp_path, "odd")
    run_ok(project)
    result = project.result("r0001")
    assert (result["status"], result["verdict"]) == ("ok", "advance"), result
    assert result["primary"]["name"] == metric
    assert project.rows()[0][5] == " ".join(metric.split())


@pytest.mark.parametrize("metric", ["val loss", "acc@1", "ünï", "loss_ü", "it's", "-loss", "1loss"])
def test_metric_name_the_default_pattern_cannot_match_is_refused(tmp_path: Path, metric: str) -> None:
    done = ar_in(tmp_path, "init", "--example", "--expr", "m", "--goal", "g", "--primary-metric", metric, "--primary-direction", "min")
    assert_one_line_error(done, "--log-pattern")
    assert list(tmp_path.iterdir()) == []  # not even .autoresearch/


@pytest.mark.parametrize(
    "changes",
    [
        {"--expr": "../x"},
        {"--expr": "A B"},
        {"--expr": "exp"},  # exists already
        {"--expr": ""},
        {"--goal": ""},
        {"--goal": " \n\t "},
        {"--primary-direction": "up"},
        {"--primary-metric": ""},
        {"--primary-metric": "a\nb"},
        {"--constraints": "mem=10"},
        {"--constraints": "mem<=abc"},
        {"--constraints": "mem<=nan"},
        {"--seconds": "0"},
        {"--seconds": "-5"},
        {"--metric-backend": "nope"},
        {"--runner": " "},
        {"--log-pattern": "("},
        {"--log-pattern": "val_loss=\\S+"},  # no groups, no placeholder
        {"--log-pattern": "{name}=\\S+"},  # no group around the value
    ],
    ids=lambda c: " ".join(f"{k}={v!r}" for k, v in c.items()),
)
def test_invalid_init_input_is_one_line_and_leaves_nothing(project: Project, tmp_path: Path, changes: dict) -> None:
    args = {"--expr": "new-one", "--goal": "g", "--primary-metric": "val_loss", "--primary-direction": "min", **changes}
    flat = [item for pair in args.items() for item in pair] + ["--example"]

    before = tree(project.root)
    assert_one_line_error(project.ar("init", *flat))
    assert tree(project.root) == before

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    if changes != {"--expr": "exp"}:
        assert_one_line_error(ar_in(fresh, "init", *flat))
        assert list(fresh.iterdir()) == []


# ------------------------------------------------------------------------------------------- RUN_NOTE

NOTE_SOURCE = '''RUN_NOTE = """lr "3e-4"\tand it's
second \\\\ line   ünï
   third"""  # trailing comment, "not the note"
print("val_loss=1.0")
'''
NOTE = 'lr "3e-4" and it\'s second \\ line ünï third'


def test_multiline_run_note_is_recorded_on_one_line(project: Project) -> None:
    project.train_py.write_text(NOTE_SOURCE, encoding="utf-8")
    done = run_ok(project)
    assert done.stdout.splitlines()[0].startswith('launched r0001: lr "3e-4"')
    assert project.result("r0001")["note"] == NOTE
    raw = (project.expr / "results.tsv").read_text(encoding="utf-8")
    assert raw.count("\n") == 2  # header + one row
    row = project.rows()[0]
    assert len(row) == 11
    assert row[9] == NOTE
    status = project.ar("status", "--last", "1")
    assert status.stdout.strip().splitlines()[-1] == f"r0001 advance 1 {NOTE}"


@pytest.mark.parametrize(
    "line, note",
    [
        ("RUN_NOTE = 'keep # this'  # but not this", "keep # this"),
        ("RUN_NOTE = 'tab\\there\\nnewline'", "tab here newline"),
        ("RUN_NOTE = ('implicit ' \"concat\")  # c", "implicit concat"),
        ("RUN_NOTE = " + repr("x" * 500), "x" * 200),
    ],
)
def test_run_note_variants(project: Project, line: str, note: str) -> None:
    project.train_py.write_text(f"{line}\nprint('val_loss=1.0')\n", encoding="utf-8")
    run_ok(project)
    assert project.result("r0001")["note"] == note
    row = project.rows()[0]
    assert len(row) == 11 and row[9] == note


# -------------------------------------------------------------------------------- damaged state files


def three_runs(project: Project) -> None:
    project.write_train(printing("2.0"), "first")
    run_ok(project)
    project.write_train(printing("3.0"), "worse")
    run_ok(project)
    project.write_train("raise SystemExit(2)\n", "crash")
    run_ok(project)


def status_json(project: Project) -> dict:
    done = project.ar("status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "damage",
    [None, b"", b"\x00\xff{garbage", b"[1, 2]", b"null", b'{"last_run": "x", "runs": null}',
     b'{"last_run": 1, "runs": 1, "counts": {"advance": 1}}'],
    ids=["deleted", "empty", "garbage", "list", "null", "wrong-types", "stale"],
)
def test_state_file_is_rebuilt_from_results(project: Project, damage: bytes | None) -> None:
    three_runs(project)
    state = project.expr / ".ar-state.json"
    expected = json.loads(state.read_text())
    if damage is None:
        state.unlink()
    else:
        state.write_bytes(damage)

    data = status_json(project)
    assert data["runs"] == 3
    assert data["counts"] == {"advance": 1, "revert": 1, "crash": 1}
    assert data["best"] == {"run_id": "r0001", "value": 2.0, "checkpoint": None}
    assert json.loads(state.read_text()) == expected  # saved again, as the runs left it

    project.write_train(printing("1.0"), "next")
    run_ok(project)
    assert project.result("r0004")["verdict"] == "advance"  # a new id: no run is overwritten
    assert [r[0] for r in project.rows()] == ["r0001", "r0002", "r0003", "r0004"]
    assert status_json(project)["runs"] == 4


@pytest.mark.parametrize("damage", [b"{not json", b"[]", b'{"run_id": 7}'], ids=["garbage", "list", "bad-run-id"])
def test_damaged_best_json_is_a_one_line_error(project: Project, damage: bytes) -> None:
    project.write_train(printing("2.0"))
    run_ok(project)
    (project.expr / "best.json").write_bytes(damage)
    project.write_train(printing("1.0"), "edited")
    edited = project.train_py.read_bytes()
    for command in (["run"], ["status", "--json"], ["report"]):
        assert_one_line_error(project.ar(*command), "best.json")
    assert project.train_py.read_bytes() == edited  # nothing was run or restored
    assert not (project.expr / "runs" / "r0002").exists()
    assert len(project.rows()) == 1

    # the fix the message names: delete it, and the next command points it at the best run again
    (project.expr / "best.json").unlink()
    assert status_json(project)["best"] == {"run_id": "r0001", "value": 2.0, "checkpoint": None}
    project.write_train(printing("3.0"), "worse than the best")
    run_ok(project)
    assert project.result("r0002")["verdict"] == "revert"


def _edit_session(path: Path) -> None:
    data = json.loads(path.read_text())
    data["loop"]["seconds"] = 1  # a hand edit that keeps the JSON valid
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda p: p.write_bytes(b"{garbage"), [".ar-session.json", "not valid JSON"]),
        (lambda p: p.write_bytes(b""), [".ar-session.json"]),
        (lambda p: p.write_bytes(b"[1]"), [".ar-session.json"]),
        (lambda p: p.write_bytes(b'{"format": 1}'), [".ar-session.json"]),
        (_edit_session, [".ar-session.json", "by hand"]),
    ],
    ids=["garbage", "empty", "list", "no-digest", "hand-edited"],
)
def test_damaged_session_file_is_a_one_line_error(project: Project, damage, words: list[str]) -> None:
    project.write_train(printing("2.0"))
    run_ok(project)
    damage(project.expr / ".ar-session.json")
    for command in (["run"], ["status"], ["session", "--max-runs", "5"]):
        assert_one_line_error(project.ar(*command, "--expr", "exp"), *words)
    assert not (project.expr / "runs" / "r0002").exists()


def test_deleted_session_file_is_a_one_line_error(project: Project) -> None:
    (project.expr / ".ar-session.json").unlink()
    assert_one_line_error(project.ar("run"))
    assert_one_line_error(project.ar("status", "--expr", "exp"), "exp")


@pytest.mark.parametrize("cut", [1, 40])
def test_truncated_last_row_is_repaired(project: Project, cut: int) -> None:
    three_runs(project)
    results = project.expr / "results.tsv"
    intact = results.read_bytes()
    results.write_bytes(intact[:-cut])  # the last row loses its end (and its newline)

    data = status_json(project)
    assert data["runs"] == 3
    assert results.read_bytes() == intact  # the lost row is back, whole
    assert [len(r) for r in project.rows()] == [11, 11, 11]

    project.write_train(printing("1.0"), "next")
    run_ok(project)
    assert [r[0] for r in project.rows()] == ["r0001", "r0002", "r0003", "r0004"]
    assert all(len(r) == 11 for r in project.rows())


# --------------------------------------------------------------------------- wrong place, wrong name


@pytest.mark.parametrize(
    "args, words",
    [
        (["status", "--expr", "nope"], ["nope", "exp"]),
        (["run", "--expr", "nope"], ["nope"]),
        (["tail", "--expr", "nope"], ["nope"]),
        (["session", "--expr", "nope"], ["nope"]),
        (["report", "--expr", "nope"], ["nope"]),
        (["wait", "--expr", "nope"], ["nope"]),
        (["stop", "--expr", "nope"], ["nope"]),
        (["status", "--expr", "../exp"], ["../exp"]),
        (["tail", "--run", "r0099"], ["r0099"]),
        (["tail", "--run", "bogus"], ["bogus"]),
        (["tail"], ["no runs"]),
        (["run", "--seconds", "0"], ["--seconds"]),
    ],
)
def test_unknown_names_are_one_line_errors(project: Project, args: list[str], words: list[str]) -> None:
    assert_one_line_error(project.ar(*args), *words)
    assert not (project.expr / "runs" / "r0001").exists()


@pytest.mark.parametrize("command", [["run"], ["status"], ["status", "--compact"], ["tail"], ["wait"], ["stop"], ["report"], ["session"]])
def test_commands_outside_any_project_are_one_line_errors(tmp_path: Path, command: list[str]) -> None:
    elsewhere = tmp_path / "not-a-project"
    elsewhere.mkdir()
    assert_one_line_error(ar_in(elsewhere, *command), ".autoresearch", "autoresearch init")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["run", "--wait", "nan"], ["wait", "--wait", "inf"], ["session", "--threshold", "nan"],
    ["session", "--min-delta", "-inf"], ["session", "--min-rel-delta", "NaN"],
])
def test_non_finite_numbers_are_refused(project: Project, args: list[str]) -> None:
    before = (project.expr / ".ar-session.json").read_bytes()
    assert_one_line_error(project.ar(*args), args[1], "is not a finite number")
    assert (project.expr / ".ar-session.json").read_bytes() == before
    assert not list((project.expr / "runs").iterdir())


@pytest.mark.parametrize("kind", ["symlink to /dev/zero", "directory", "fifo", "5 MiB", "missing"])
def test_train_py_that_is_not_a_sane_regular_file_is_refused(project: Project, kind: str) -> None:
    train = project.train_py
    train.unlink()
    if kind == "symlink to /dev/zero":
        train.symlink_to("/dev/zero")
    elif kind == "directory":
        train.mkdir()
    elif kind == "fifo":
        os.mkfifo(train)
    elif kind == "5 MiB":
        train.write_text("RUN_NOTE = 'big'\n" + "#" * (5 << 20))
    words = {"symlink to /dev/zero": "is a symlink", "directory": "is a directory", "fifo": "is a special file",
             "5 MiB": "5.0 MiB", "missing": "is missing"}[kind]
    assert_one_line_error(project.ar("run", timeout=20), "train.py", words)
    assert not list((project.expr / "runs").iterdir()) and project.rows() == []
    assert project.ar("status", timeout=20).returncode == 0  # never reads it
    if kind != "directory":
        assert project.ar("session", "--resume", "revert-best", timeout=20).returncode == 0
        assert train.read_bytes() == (project.expr / "train.py.baseline").read_bytes()
