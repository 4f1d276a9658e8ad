"""Every row of the status x verdict table (SPEC §5.1) with real `ar run` processes.

Each test drives the real CLI in a throwaway project with a real train.py, then checks what a user
would check in the morning: result.json, the results.tsv row, best.json, and whether train.py was
kept or restored byte-for-byte (to runs/<best>/train.py, or train.py.baseline before any best).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from processes import assert_all_gone, hung_mount, wait_until
from conftest import Project, clean_env, make_project, printing

from ar.termination import Counters, Limits, terminated_by
from ar.verdict import Decision, decide

PY = sys.executable


# ---------------------------------------------------------------------------------------------- helpers


def run(project: Project, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`ar run`, which must print at most 3 lines (and no traceback)."""
    done = project.ar("run", *args, env=env)
    out = done.stdout.splitlines()
    assert len(out) <= 3, done.stdout
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def result_of(project: Project, run_id: str) -> dict:
    """result.json, checked to be small, strictly valid JSON (no NaN / Infinity literals)."""
    raw = (project.expr / "runs" / run_id / "result.json").read_bytes()
    assert len(raw) < 2048, len(raw)

    def no_constants(name: str):
        raise AssertionError(f"result.json holds the non-JSON literal {name}")

    result = json.loads(raw, parse_constant=no_constants)
    for key in ("run_id", "started_at", "wall_seconds", "status", "verdict", "valid", "improved_over_best",
                "primary", "previous_best", "metrics", "constraints", "note", "exit_code",
                "should_terminate", "terminated_by", "chain_remaining", "log_path"):
        assert key in result, key
    assert result["run_id"] == run_id
    return result


def snapshot(project: Project, run_id: str) -> bytes:
    return (project.expr / "runs" / run_id / "train.py").read_bytes()


def baseline(project: Project) -> bytes:
    return (project.expr / "train.py.baseline").read_bytes()


def assert_restored(project: Project) -> None:
    """train.py is byte-for-byte the best run's snapshot, or the baseline when there is no best."""
    best = project.best()
    wanted = snapshot(project, best["run_id"]) if best else baseline(project)
    assert project.train_py.read_bytes() == wanted


def assert_rows(project: Project, n: int) -> list[list[str]]:
    rows = project.rows()
    assert [r[0] for r in rows] == [f"r{i:04d}" for i in range(1, n + 1)]  # exactly one row per run
    assert all(len(r) == 11 for r in rows), rows
    return rows


def run_value(project: Project, value: str, note: str = "test", *args: str) -> subprocess.CompletedProcess:
    project.write_train(printing(value), note)
    return run(project, *args)


# ------------------------------------------------------------------------------------ ok / advance


@pytest.mark.parametrize(
    "direction, values, verdicts",
    [
        ("min", ["5.0", "3.0", "3.5", "3.0", "1.0"], ["advance", "advance", "revert", "revert", "advance"]),
        ("max", ["0.2", "0.7", "0.5", "0.7", "0.9"], ["advance", "advance", "revert", "revert", "advance"]),
    ],
)
def test_ok_advance_and_revert(tmp_path: Path, direction: str, values: list[str], verdicts: list[str]) -> None:
    project = make_project(tmp_path, "--primary-direction", direction)
    best_id, best_value = None, None
    for i, (value, verdict) in enumerate(zip(values, verdicts), 1):
        run_id = f"r{i:04d}"
        edited = f"RUN_NOTE = 'try {value}'\nprint('val_loss={value}')\n".encode()
        project.train_py.write_bytes(edited)
        done = run(project)
        assert done.returncode == 0, done.stderr
        out = done.stdout.splitlines()
        assert out[0].startswith(f"launched {run_id}")
        assert f"verdict ok/{verdict}" in out[-1]

        result = result_of(project, run_id)
        assert (result["status"], result["verdict"]) == ("ok", verdict)
        assert result["valid"] is True
        assert result["primary"] == {"name": "val_loss", "direction": direction, "value": float(value)}
        assert result["metrics"]["val_loss"] == float(value)
        assert result["previous_best"] == (None if best_id is None else {"run_id": best_id, "value": best_value})
        assert result["note"] == f"try {value}"
        assert result["exit_code"] == 0
        assert result["should_terminate"] is False and result["terminated_by"] is None
        assert snapshot(project, run_id) == edited
        if verdict == "advance":
            # the first valid run sets the best whatever its value; later ones must beat it
            assert result["improved_over_best"] is True
            best_id, best_value = run_id, float(value)
            assert project.train_py.read_bytes() == edited  # kept
        else:
            assert result["improved_over_best"] is False  # worse, or equal: not an improvement
            assert project.train_py.read_bytes() == snapshot(project, best_id)  # restored
        assert project.best()["run_id"] == best_id and project.best()["value"] == best_value

        row = assert_rows(project, i)[-1]
        assert row[3:10] == ["ok", verdict, "val_loss", format(float(value), ".10g"), "true",
                             "true" if verdict == "advance" else "false", f"try {value}"]


def test_revert_restores_baseline_byte_for_byte_when_no_best(project: Project) -> None:
    # a failed first run leaves train.py as the user set it up (the baseline is that, not the
    # scaffold); a failed second run without a best gets that baseline back
    scaffold = baseline(project)
    project.write_train("print('no metric here')\n", note="the user's own training")
    users = project.train_py.read_bytes()
    run(project)
    assert project.best() is None
    assert project.train_py.read_bytes() == baseline(project) == users != scaffold
    assert result_of(project, "r0001")["train_py"] == "restored from baseline (as set up for r0001)"
    project.write_train("raise SystemExit(1)\n", note="the agent's edit")
    run(project)
    assert project.train_py.read_bytes() == users


# --------------------------------------------------------------------------- ok / revert on constraints


def test_failed_hard_constraint_reverts_a_better_value(tmp_path: Path) -> None:
    project = make_project(tmp_path, "--constraints", "mem<=10")
    project.write_train("print('val_loss=2.0 mem=8')\n", "fits")
    run(project)
    assert result_of(project, "r0001")["verdict"] == "advance"

    project.write_train("print('val_loss=1.0')\nprint('mem=12')\n", "too big")
    done = run(project)
    assert done.returncode == 0
    result = result_of(project, "r0002")
    assert (result["status"], result["verdict"]) == ("ok", "revert")
    assert result["valid"] is False
    assert result["improved_over_best"] is True
    assert result["constraints"] == [{"name": "mem", "op": "<=", "threshold": 10.0, "value": 12.0, "passed": False}]
    assert "mem<=10" in result["reason"]
    assert "mem<=10" in done.stdout.splitlines()[-1]
    assert result["metrics"]["mem"] == 12.0
    assert project.best()["run_id"] == "r0001"
    assert_restored(project)
    assert assert_rows(project, 2)[-1][7:9] == ["false", "true"]


def test_constraint_on_a_metric_that_never_appears(tmp_path: Path) -> None:
    """A limit nobody measures cannot block silently: init says so, and every run is invalid (a
    failure, so the breaker ends a loop that can never advance) with the reason."""
    project = Project(tmp_path)
    done = project.ar("init", "--example", "--expr", "exp", "--goal", "g", "--primary-metric", "val_loss", "--primary-direction", "min",
                      "--seconds", "20", "--constraints", "gpu_mem_gb<=10", "--constraints", "acc>=0.5",
                      "--constraints", "peak_rss_mb<=100000")
    assert done.returncode == 0 and done.stdout == "exp\n"
    notes = done.stderr.splitlines()
    assert len(notes) == 2 and "acc" in notes[0] and "gpu_mem_gb" in notes[1] and "peak_rss_mb" in notes[0]  # named as measured
    project.ar("session", "--max-failures", "2", check=True)
    project.write_train("print('val_loss=1.0 acc=0.9')\n")
    run(project)
    result = result_of(project, "r0001")
    assert (result["status"], result["verdict"], result["valid"], result["improved_over_best"]) == ("invalid", "revert", False, False)
    assert result["constraints"][:2] == [
        {"name": "gpu_mem_gb", "op": "<=", "threshold": 10.0, "value": None, "passed": False},
        {"name": "acc", "op": ">=", "threshold": 0.5, "value": 0.9, "passed": True},
    ]
    assert "constraint metric gpu_mem_gb never appeared" in result["reason"] and "acc," not in result["reason"]
    assert project.best() is None
    assert_restored(project)  # the baseline
    second = run(project)
    assert result_of(project, "r0002")["terminated_by"] == "consecutive_failures", second.stdout


# ------------------------------------------------------------------------------------- invalid / revert


@pytest.mark.parametrize(
    "body, reason",
    [
        ("print('val_los=1.0 xval_loss=0.1 val_loss_ema=0.2')\n", "not found"),
        ("print('val_loss=nan')\n", "not finite"),
        ("print('val_loss=0.5')\nprint('val_loss=inf')\n", "not finite"),  # the last occurrence wins
        ("print('val_loss: -Infinity')\n", "not finite"),
    ],
    ids=["missing", "nan", "inf", "minus-infinity"],
)
def test_invalid_metric_reverts(project: Project, body: str, reason: str) -> None:
    run_value(project, "4.0", "good")
    project.write_train(body, "bad")
    done = run(project)
    assert done.returncode == 0
    result = result_of(project, "r0002")
    assert (result["status"], result["verdict"], result["valid"], result["improved_over_best"]) == ("invalid", "revert", False, False)
    assert result["primary"]["value"] is None  # never a number, never a NaN literal
    assert reason in result["reason"]
    assert result["exit_code"] == 0
    assert project.best()["run_id"] == "r0001"
    assert_restored(project)
    row = assert_rows(project, 2)[-1]
    assert row[3:5] == ["invalid", "revert"]
    assert row[7:9] == ["false", "false"]


# ---------------------------------------------------------------------------------------- crash / crash


@pytest.mark.parametrize(
    "body, exit_codes, error_line",
    [
        ("def f():\n    raise RuntimeError('boom in f')\nprint('val_loss=0.1')\nf()\n", (1,), "RuntimeError: boom in f"),
        ("import os\nprint('val_loss=0.1', flush=True)\nos.kill(os.getpid(), 9)\n", (-9, 137), None),
        ("print('val_loss=0.1')\ndef main(:\n    pass\n", (1,), "SyntaxError"),
    ],
    ids=["raise", "sigkill", "syntax-error"],
)
def test_crash_restores_and_tail_shows_the_error(project: Project, body: str, exit_codes: tuple, error_line: str | None) -> None:
    run_value(project, "4.0", "good")
    project.write_train(body, "broken")
    done = run(project)
    assert done.returncode == 0
    result = result_of(project, "r0002")
    assert (result["status"], result["verdict"], result["valid"], result["improved_over_best"]) == ("crash", "crash", False, False)
    assert result["exit_code"] in exit_codes
    assert "autoresearch tail --run r0002" in done.stdout.splitlines()[-1]
    assert project.best()["run_id"] == "r0001"
    assert_restored(project)
    assert assert_rows(project, 2)[-1][3:5] == ["crash", "crash"]

    tail = project.ar("tail", "--run", "r0002")
    assert tail.returncode == 0, tail.stderr
    shown = tail.stdout.splitlines()
    assert 0 < len(shown) <= 30
    if error_line is None:  # killed by a signal: no traceback, the log's last lines
        assert "val_loss=0.1" in shown
        return
    assert shown[-1].startswith(error_line), shown
    if error_line.startswith("RuntimeError"):
        assert shown[0] == "Traceback (most recent call last):"
        assert any("in f" in line for line in shown)
    else:  # Python prints no traceback header for a syntax error: the caret block ends the log
        assert any("def main(:" in line for line in shown)


# ----------------------------------------------------------------------------------- timeout / timeout


def test_timeout_of_an_endless_loop(project: Project) -> None:
    run_value(project, "4.0", "good")
    project.write_train("print('val_loss=0.1', flush=True)\nwhile True:\n    pass\n", "hang")
    started = time.monotonic()
    done = run(project, "--seconds", "2")
    elapsed = time.monotonic() - started
    assert done.returncode == 0
    result = result_of(project, "r0002")
    assert (result["status"], result["verdict"], result["valid"]) == ("timeout", "timeout", False)
    assert result["seconds"] == 2
    # killed at the deadline, long before the 20 s a test run is given (the endless loop never ends)
    assert 2.0 <= result["wall_seconds"] < 20 and elapsed < 20
    assert "killed at the time limit" in result["reason"]
    assert project.best()["run_id"] == "r0001"
    assert_restored(project)
    assert assert_rows(project, 2)[-1][3:5] == ["timeout", "timeout"]


TREE_IGNORING_SIGTERM = """
import os, signal, sys, time
PIDS = {pids!r}
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by every process below

def note():
    open(os.path.join(PIDS, str(os.getpid()) + ".tmp"), "w").close()
    os.rename(os.path.join(PIDS, str(os.getpid()) + ".tmp"), os.path.join(PIDS, str(os.getpid())))

def linger():
    note()
    while True:
        time.sleep(1)

for kind in ("child", "setsid", "orphan-parent"):
    if os.fork() == 0:
        if kind == "setsid":
            os.setsid()  # leaves the run's session
        if kind == "child" and os.fork() == 0:
            linger()  # grandchild
        if kind == "orphan-parent":
            if os.fork() == 0:
                time.sleep(0.2)  # its parent exits meanwhile: an orphan
                linger()
            os._exit(0)
        linger()
note()
print("val_loss=0.1", flush=True)
linger()
"""


def test_timeout_kills_a_tree_that_ignores_sigterm(project: Project, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    project.write_train(TREE_IGNORING_SIGTERM.format(pids=str(pids)), "stubborn tree")
    done = run(project, "--seconds", "2")
    assert done.returncode == 0
    result = result_of(project, "r0001")
    assert (result["status"], result["verdict"]) == ("timeout", "timeout")
    recorded = [int(p.name) for p in pids.iterdir() if p.name.isdigit()]
    assert len(recorded) == 5  # main, child, grandchild, setsid child, orphan
    assert_all_gone(recorded)
    assert_restored(project)
    assert not (project.expr / ".ar-unclean").exists()


# ---------------------------------------------------------------------------- interrupted / interrupted

SLEEPER = """
import os, time
open(os.path.join(os.environ["AR_RUN_DIR"], "started"), "w").close()
print("val_loss=0.01", flush=True)
time.sleep(60)
"""


def start_client(project: Project, **popen) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "ar", "run"], cwd=project.root, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.parametrize("how", ["ar-stop", "ctrl-c"])
def test_interrupted_run(project: Project, how: str) -> None:
    run_value(project, "4.0", "good")
    project.write_train(SLEEPER, "long one")
    started_file = project.expr / "runs" / "r0002" / "started"
    client = start_client(project, start_new_session=(how == "ctrl-c"))
    try:
        assert wait_until(started_file.exists), "the run did not start"
        t0 = time.monotonic()
        if how == "ar-stop":
            stop = project.ar("stop")
            assert stop.returncode == 0, stop.stderr
            assert any("interrupted" in line for line in stop.stdout.splitlines())
        else:
            os.killpg(client.pid, signal.SIGINT)  # a terminal's Ctrl+C reaches the foreground group
        out, err = client.communicate(timeout=30)
        assert time.monotonic() - t0 < 10
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 130, (out, err)
    assert len(out.splitlines()) <= 3 and "verdict interrupted/interrupted" in out
    assert "Traceback" not in err

    result = result_of(project, "r0002")
    assert (result["status"], result["verdict"], result["valid"]) == ("interrupted", "interrupted", False)
    assert result["should_terminate"] is True and result["terminated_by"] == "manual"
    assert result["wall_seconds"] < 10
    assert project.best()["run_id"] == "r0001"
    assert_restored(project)
    assert assert_rows(project, 2)[-1][3:5] == ["interrupted", "interrupted"]

    refused = run(project)
    assert refused.returncode == 4
    assert len(refused.stderr.strip().splitlines()) == 1 and "manual" in refused.stderr
    assert not (project.expr / "runs" / "r0003").exists()
    assert assert_rows(project, 2)

    project.ar("session", "--resume", "continue", check=True)
    again = run_value(project, "3.0", "after resume")
    assert again.returncode == 0, again.stderr
    assert result_of(project, "r0003")["verdict"] == "advance"
    assert_rows(project, 3)


# --------------------------------------------------------------------------------------- unclean / crash


STUCK_CHILD = """
import os, time
MNT, STUCK = {mnt!r}, {stuck!r}
child = os.fork()
if child == 0:
    with open(STUCK + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(STUCK + ".tmp", STUCK)
    open(os.path.join(MNT, "x"))  # never answered: the kernel holds this process
    os._exit(0)
while not os.path.exists(STUCK):
    time.sleep(0.01)
time.sleep(0.3)  # let its request reach the server
print("val_loss=0.5", flush=True)
"""


def test_unclean_run_is_a_fatal_crash_until_the_survivor_is_gone(project: Project, tmp_path: Path) -> None:
    with hung_mount(tmp_path) as mount:
        stuck_file = tmp_path / "stuck"
        run_value(project, "4.0", "good")
        project.write_train(STUCK_CHILD.format(mnt=str(mount.path), stuck=str(stuck_file)), "stuck child")
        done = run(project)
        assert done.returncode == 0, done.stderr
        stuck = int(stuck_file.read_text())

        result = result_of(project, "r0002")
        assert (result["status"], result["verdict"], result["valid"]) == ("unclean", "crash", False)
        assert str(stuck) in result["reason"]
        assert psutil.Process(stuck).status() == psutil.STATUS_DISK_SLEEP
        sentinel = json.loads((project.expr / ".ar-unclean").read_text())
        assert sentinel == {"run_id": "r0002", "pids": [stuck]}
        assert project.best()["run_id"] == "r0001"
        assert_restored(project)
        assert assert_rows(project, 2)[-1][3:5] == ["unclean", "crash"]

        project.write_train(printing("3.0"), "after unclean")
        refused = run(project)
        assert refused.returncode == 6
        assert len(refused.stderr.strip().splitlines()) == 1 and str(stuck) in refused.stderr
        assert refused.stderr.startswith("ar: ") and "fix:" in refused.stderr
        assert not (project.expr / "runs" / "r0003").exists()

        mount.release()
        assert_all_gone([stuck])
        again = run(project)
        assert again.returncode == 0, again.stderr
        assert result_of(project, "r0003")["verdict"] == "advance"
        assert not (project.expr / ".ar-unclean").exists()
        assert_rows(project, 3)


# ---------------------------------------------------------------------------------- the child's env


def test_child_environment_is_fresh(project: Project) -> None:
    project.write_train(
        "import json, os, time\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith('AR_')}\n"
        "env['now'] = time.time()\n"
        "json.dump(env, open(os.path.join(os.environ['AR_RUN_DIR'], 'env.json'), 'w'))\n"
        "print('val_loss=1')\n"
    )
    stale = clean_env(AR_RUN_ID="r9999", AR_RUN_DIR="/nonexistent/run", AR_EXPR_DIR="/nonexistent",
                      AR_SECONDS="1", AR_DEADLINE="1", AR_SEED="7", AR_STALE_SETTING="leaked")
    done = run(project, "--seconds", "7", env=stale)
    assert done.returncode == 0, done.stderr
    env = json.loads((project.expr / "runs" / "r0001" / "env.json").read_text())
    now = env.pop("now")
    assert set(env) == {"AR_RUN_ID", "AR_RUN_DIR", "AR_EXPR_DIR", "AR_SECONDS", "AR_DEADLINE", "AR_CKPT_DIR"}  # AR_SEED: only for repeats
    assert env["AR_RUN_ID"] == "r0001"
    assert Path(env["AR_RUN_DIR"]) == (project.expr / "runs" / "r0001").resolve()
    assert Path(env["AR_EXPR_DIR"]) == project.expr.resolve()
    assert Path(env["AR_CKPT_DIR"]) == (project.expr / "runs" / "r0001" / "ckpt").resolve()
    assert env["AR_SECONDS"] == "7"
    assert abs(float(env["AR_DEADLINE"]) - (now + 7)) < 3


# ---------------------------------------------------------------------------------------- termination


def test_max_runs(project: Project) -> None:
    project.ar("session", "--max-runs", "2", check=True)
    assert run_value(project, "3.0").returncode == 0
    assert result_of(project, "r0001")["should_terminate"] is False
    done = run_value(project, "2.0")
    assert done.returncode == 4
    result = result_of(project, "r0002")
    assert result["verdict"] == "advance"  # the last run still counts and is kept
    assert result["should_terminate"] is True and result["terminated_by"] == "max_runs"
    assert "TERMINATED by max_runs" in done.stdout.splitlines()[-1]

    refused = run_value(project, "1.0")
    assert refused.returncode == 4
    assert refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1
    assert refused.stderr.startswith("ar: ") and "max_runs" in refused.stderr
    assert not (project.expr / "runs" / "r0003").exists()
    assert_rows(project, 2)


def test_plateau(project: Project) -> None:
    project.ar("session", "--plateau", "2", check=True)
    run_value(project, "3.0")
    run_value(project, "4.0")
    assert result_of(project, "r0002")["should_terminate"] is False
    project.write_train("print('no metric')\n")  # not scored: does not count towards the plateau
    run(project)
    assert result_of(project, "r0003")["should_terminate"] is False
    done = run_value(project, "3.0")  # equal is no improvement
    assert done.returncode == 4
    assert result_of(project, "r0004")["terminated_by"] == "plateau"
    assert run_value(project, "0.1").returncode == 4
    assert_rows(project, 4)


@pytest.mark.parametrize("direction, values", [("min", ["2.0", "0.5"]), ("max", ["0.5", "0.95"])])
def test_threshold(tmp_path: Path, direction: str, values: list[str]) -> None:
    project = make_project(tmp_path, "--primary-direction", direction)
    project.ar("session", "--threshold", "0.9" if direction == "max" else "1.0", check=True)
    assert run_value(project, values[0]).returncode == 0
    assert result_of(project, "r0001")["should_terminate"] is False
    assert run_value(project, values[1]).returncode == 4
    result = result_of(project, "r0002")
    assert (result["verdict"], result["terminated_by"]) == ("advance", "primary_threshold")
    assert run_value(project, values[1]).returncode == 4
    assert_rows(project, 2)


def test_consecutive_failures(project: Project) -> None:
    run_value(project, "3.0")
    for i in range(2, 7):
        project.write_train("raise SystemExit(3)\n", f"broken {i}")
        done = run(project)
        result = result_of(project, f"r{i:04d}")
        assert (result["status"], result["exit_code"]) == ("crash", 3)
        if i < 6:
            assert done.returncode == 0 and result["should_terminate"] is False
    assert done.returncode == 4
    assert result["terminated_by"] == "consecutive_failures"
    assert_restored(project)
    refused = run_value(project, "1.0")
    assert refused.returncode == 4 and "consecutive_failures" in refused.stderr
    assert_rows(project, 6)


# ------------------------------------------------------------------------------- pure decision tables


@pytest.mark.parametrize(
    "status, primary, best, direction, hold, expected",
    [
        ("ok", 5.0, None, "min", True, ("ok", "advance", True, True)),  # first valid run: best regardless
        ("ok", 5.0, None, "max", True, ("ok", "advance", True, True)),
        ("ok", 1.0, 2.0, "min", True, ("ok", "advance", True, True)),
        ("ok", 3.0, 2.0, "min", True, ("ok", "revert", True, False)),
        ("ok", 2.0, 2.0, "min", True, ("ok", "revert", True, False)),  # equal is no improvement
        ("ok", 3.0, 2.0, "max", True, ("ok", "advance", True, True)),
        ("ok", 1.0, 2.0, "max", True, ("ok", "revert", True, False)),
        ("ok", 2.0, 2.0, "max", True, ("ok", "revert", True, False)),
        ("ok", 1.0, 2.0, "min", False, ("ok", "revert", False, True)),  # a hard constraint failed
        ("ok", 1.0, None, "min", False, ("ok", "revert", False, True)),
        ("ok", None, 2.0, "min", True, ("invalid", "revert", False, False)),
        ("ok", math.nan, 2.0, "min", True, ("invalid", "revert", False, False)),
        ("ok", math.inf, None, "max", True, ("invalid", "revert", False, False)),
        ("ok", -math.inf, 2.0, "min", True, ("invalid", "revert", False, False)),
        ("crash", 1.0, 2.0, "min", True, ("crash", "crash", False, False)),
        ("timeout", 1.0, 2.0, "min", True, ("timeout", "timeout", False, False)),
        ("interrupted", 1.0, 2.0, "min", True, ("interrupted", "interrupted", False, False)),
        ("unclean", 1.0, 2.0, "min", True, ("unclean", "crash", False, False)),
    ],
)
def test_decide_table(status, primary, best, direction, hold, expected) -> None:
    assert decide(status, primary, best, direction, hold) == Decision(*expected)


@pytest.mark.parametrize(
    "limits, counters, expected",
    [
        (Limits("min"), Counters(100, 100, 4, 1.0, False), None),
        (Limits("min", max_failures=None), Counters(100, 100, 100, 1.0, False), None),
        (Limits("min"), Counters(1, 0, 0, None, True), "manual"),
        (Limits("min", max_runs=2, threshold=1.0), Counters(5, 0, 0, 2.0, True), "manual"),  # manual first
        (Limits("min", threshold=1.0), Counters(1, 0, 0, 1.0, False), "primary_threshold"),
        (Limits("min", threshold=1.0), Counters(1, 0, 0, 1.1, False), None),
        (Limits("max", threshold=0.9), Counters(1, 0, 0, 0.9, False), "primary_threshold"),
        (Limits("max", threshold=0.9), Counters(1, 0, 0, 0.8, False), None),
        (Limits("min", threshold=1.0), Counters(1, 0, 0, None, False), None),  # no best yet
        (Limits("min", plateau=3), Counters(9, 3, 0, 1.0, False), "plateau"),
        (Limits("min", plateau=3), Counters(9, 2, 0, 1.0, False), None),
        (Limits("min", max_runs=5), Counters(5, 0, 0, 1.0, False), "max_runs"),
        (Limits("min", max_runs=5), Counters(4, 0, 0, 1.0, False), None),
        (Limits("min"), Counters(9, 0, 5, 1.0, False), "consecutive_failures"),
        (Limits("min", max_failures=2), Counters(9, 0, 2, None, False), "consecutive_failures"),
        (Limits("min", max_runs=5, plateau=2), Counters(5, 2, 0, 1.0, False), "plateau"),
    ],
)
def test_terminated_by_table(limits: Limits, counters: Counters, expected: str | None) -> None:
    assert terminated_by(limits, counters) == expected


def test_unclean_sentinel_holds_while_its_process_lives_and_ignores_zombies(project: Project) -> None:
    """The .ar-unclean gate without FUSE: a live pid refuses runs (exit 6); a zombie holds no GPU
    memory and counts as gone."""
    sentinel = project.expr / ".ar-unclean"
    survivor = subprocess.Popen(["sleep", "60"])
    try:
        sentinel.write_text(json.dumps({"run_id": "r0000", "pids": [survivor.pid]}))
        project.write_train(printing("1.0"))
        refused = run(project)
        assert refused.returncode == 6, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and str(survivor.pid) in refused.stderr
        assert project.rows() == []

        survivor.kill()  # not waited for: a zombie until pytest reaps it
        assert wait_until(lambda: psutil.Process(survivor.pid).status() == psutil.STATUS_ZOMBIE)
        done = run(project)
        assert done.returncode == 0, done.stderr
        assert not sentinel.exists()
        assert_rows(project, 1)
    finally:
        survivor.kill()
        survivor.wait()
