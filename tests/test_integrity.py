"""Integrity of an experiment under kills, concurrency and hand edits (SPEC §5.6, §6).

Every test drives the real CLI in subprocesses. After a kill, the next command (`ar status`)
must repair: one results row per run directory, best.json on an existing snapshot, train.py
equal to the best (or the baseline), counters that agree with results.tsv, no temp files and
no process of the run left alive; and the best from before the kill is never lost.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Project, clean_env, printing
from processes import gone, wait_until

HEADER = "run_id\tstarted_at\twall_s\tstatus\tverdict\tmetric\tvalue\tvalid\timproved\tnote\tdiff"
FAILURES = {"crash", "timeout", "invalid", "unclean"}


# ---------------------------------------------------------------- helpers


def start_ar(project: Project, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ar", *args],
        cwd=project.root,
        env=env or clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_line(text: str) -> str:
    got = text.strip().splitlines()
    assert len(got) == 1, f"expected one line, got {got!r}"
    return got[0]


def out_lines(done) -> list[str]:
    return done.stdout.strip().splitlines()


def run_ok(project: Project, *args: str) -> list[str]:
    done = project.ar("run", *args, check=True)
    return out_lines(done)


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def active(project: Project) -> dict | None:
    try:
        return json.loads((project.expr / ".ar-active.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _proc_info(pid: int) -> tuple[str, bytes, bytes] | None:
    """(cwd, environ, cmdline) of a live (non-zombie) process; None when gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        if stat[stat.rindex(b")") + 2 :].split()[0] == b"Z":
            return None
        return os.readlink(f"/proc/{pid}/cwd"), Path(f"/proc/{pid}/environ").read_bytes(), Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None


def project_pids(project: Project) -> list[int]:
    """Live processes working in this project: `ar` clients and supervisors (cwd) and training runs (env tag)."""
    root = str(project.root)
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        info = _proc_info(int(name))
        if info is None:
            continue
        cwd, environ, _ = info
        if cwd == root or cwd.startswith(root + os.sep) or (root + os.sep).encode() in environ:
            found.append(int(name))
    return found


def alive(pid: int) -> bool:
    return _proc_info(pid) is not None


def assert_no_processes(project: Project) -> None:
    deadline = time.monotonic() + 1.0  # a SIGKILLed process needs a moment to become a zombie
    while (left := project_pids(project)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left, f"processes of the project still alive: {[(p, _proc_info(p)[2]) for p in left if _proc_info(p)]}"


def supervisor_pids(project: Project, client_pid: int) -> list[int]:
    """The supervisor (and the short-lived middle fork): forks of `ar run` other than the client."""
    root = str(project.root)
    pids = []
    act = active(project)
    candidates = [act["pid"]] if act and isinstance(act.get("pid"), int) else []
    candidates += [int(n) for n in os.listdir("/proc") if n.isdigit()]
    for pid in dict.fromkeys(candidates):
        if pid in (client_pid, os.getpid()):
            continue
        info = _proc_info(pid)
        if info and info[0] == root and b"\0ar\0run" in info[2]:
            pids.append(pid)
    return pids


def state_from_rows(rows: list[list[str]]) -> dict:
    """The counters results.tsv implies, computed independently of ar."""
    counts: dict[str, int] = {}
    scored = failures = 0
    baseline = None
    for row in rows:
        run_id, status, verdict, value = row[0], row[3], row[4], row[6]
        counts[verdict] = counts.get(verdict, 0) + 1
        if verdict == "advance":
            scored = 0
            if baseline is None:
                baseline = {"run_id": run_id, "value": float(value)}
        elif status == "ok":
            scored += 1
        failures = failures + 1 if status in FAILURES else 0
    last = int(rows[-1][0][1:]) if rows else 0
    return {"last_run": last, "runs": len(rows), "counts": counts, "scored_since_best": scored,
            "consecutive_failures": failures, "baseline": baseline}


def check_invariants(project: Project, train_py_restored: bool = True) -> dict | None:
    """The repaired state every test expects once nothing runs; returns best.json.
    train_py_restored=False: no run was started since train.py was last edited, so it may differ."""
    expr = project.expr
    text = (expr / "results.tsv").read_text()
    assert text.startswith(HEADER + "\n") and text.endswith("\n"), f"torn results.tsv: {text[-200:]!r}"
    rows = project.rows()
    for row in rows:
        assert len(row) == 11, f"malformed row {row!r}"
    ids = [row[0] for row in rows]
    run_dirs = sorted(p.name for p in (expr / "runs").iterdir())
    assert len(ids) == len(set(ids)), f"duplicate rows: {ids}"
    assert ids == run_dirs, f"rows {ids} != run dirs {run_dirs}"
    for row in rows:
        result = project.result(row[0])
        assert (result["status"], result["verdict"]) == (row[3], row[4])

    advances = [row for row in rows if row[4] == "advance"]
    best = project.best()
    baseline = (expr / "train.py.baseline").read_bytes()
    if advances:
        assert best is not None and best["run_id"] == advances[-1][0]
        assert best["value"] == pytest.approx(float(advances[-1][6]))
        values = [float(row[6]) for row in advances]
        assert values == sorted(values, reverse=True) and len(set(values)) == len(values), values
        scored = [float(row[6]) for row in rows if row[3] == "ok" and row[7] == "true"]
        assert min(scored) == pytest.approx(best["value"]), "a better run than the best exists"
        snapshot = expr / "runs" / best["run_id"] / "train.py"
        assert snapshot.is_file()
        if train_py_restored:
            assert project.train_py.read_bytes() == snapshot.read_bytes(), "train.py differs from the best snapshot"
    else:
        assert best is None
        if train_py_restored:
            assert project.train_py.read_bytes() == baseline, "train.py differs from the baseline"

    state = json.loads((expr / ".ar-state.json").read_text())
    expected = state_from_rows(rows)
    assert {k: state[k] for k in expected} == expected
    assert not [p for p in expr.rglob("*") if ".tmp-" in p.name], "temp files left behind"
    assert not (expr / ".ar-active.json").exists()
    assert_no_processes(project)
    return best


def body(value: float, sleep: float = 0.0) -> str:
    """A train.py body that records its pid in its run dir, sleeps, then prints val_loss."""
    return (
        "import os, time\n"
        "with open(os.path.join(os.environ['AR_RUN_DIR'], 'pid'), 'w') as f:\n"
        "    f.write(str(os.getpid()))\n"
        f"time.sleep({sleep})\n"
        f"print('val_loss={value}')\n"
    )


# ---------------------------------------------------------------- 1. kill at each step

CRASH_POINTS = ["after_snapshot", "after_spawn", "after_watch", "after_result", "after_promote_or_restore", "after_row"]
BEFORE_JUDGED = {"after_snapshot", "after_spawn"}  # the training never ended: repair records a crash


@pytest.mark.parametrize("kind", ["advance", "revert"])
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_kill_at_each_step(project: Project, point: str, kind: str):
    project.write_train(body(1.0), note="first")
    run_ok(project)
    first_snapshot = (project.expr / "runs" / "r0001" / "train.py").read_bytes()

    value = 0.5 if kind == "advance" else 2.0
    project.write_train(body(value, sleep=30 if point == "after_spawn" else 0), note="killed")
    edited = project.train_py.read_bytes()
    done = project.ar("run", env=clean_env(AR_CRASH_AT=point), timeout=60)
    if point == "after_snapshot":
        assert done.returncode == -signal.SIGKILL  # the client itself died
    else:
        assert done.returncode not in (0, -signal.SIGKILL), done
        last = out_lines(done)[-1]
        assert "r0002" in last and "autoresearch status" in last, done.stdout

    training_pid = None
    if point == "after_spawn":
        pid_file = project.expr / "runs" / "r0002" / "pid"
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), what="the training to start")
        training_pid = int(pid_file.read_text())
        assert alive(training_pid), "the training should outlive its killed supervisor until repair"

    status = project.ar("status")
    assert status.returncode == 0, status.stderr
    if training_pid is not None:
        assert not alive(training_pid), "repair left the training process running"
    best = check_invariants(project)

    row = project.rows()[-1]
    assert row[0] == "r0002" and len(project.rows()) == 2
    if point in BEFORE_JUDGED:
        assert (row[3], row[4]) == ("crash", "crash")
        expect_best, expect_train = "r0001", first_snapshot
    elif kind == "advance":
        assert (row[3], row[4]) == ("ok", "advance")
        expect_best, expect_train = "r0002", edited
    else:
        assert (row[3], row[4]) == ("ok", "revert")
        expect_best, expect_train = "r0001", first_snapshot
    assert best["run_id"] == expect_best  # the best from before the kill is never lost
    assert project.train_py.read_bytes() == expect_train

    # Repair is idempotent, and the loop goes on with the next id.
    assert project.ar("status").returncode == 0
    assert len(project.rows()) == 2
    project.write_train(body(0.1), note="after")
    lines = run_ok(project)
    assert lines[0].startswith("launched r0003"), lines
    assert "advance" in lines[-1]
    assert check_invariants(project)["run_id"] == "r0003"


def test_temp_files_of_a_killed_write_are_removed(project: Project):
    """A kill inside an atomic write leaves `<name>.tmp-<pid>`: in the experiment or in the run dir."""
    project.write_train(body(1.0), note="first")
    run_ok(project)
    project.write_train(body(0.5), note="killed while writing its result")
    done = project.ar("run", env=clean_env(AR_CRASH_AT="after_watch"))
    assert done.returncode == 1
    run_dir = project.expr / "runs" / "r0002"
    (run_dir / "result.json.tmp-999999").write_text('{"run_id": "r00')
    (project.expr / "best.json.tmp-999999").write_text('{"run_')
    assert project.ar("status").returncode == 0
    check_invariants(project)
    assert project.rows()[-1][:1] + project.rows()[-1][3:5] == ["r0002", "ok", "advance"]  # the training had ended: judged on its log


# ---------------------------------------------------------------- 2. randomized kills


def test_random_kills(project: Project):
    seed = int(os.environ.get("AR_TEST_SEED", time.time_ns() % 100000))
    rng = random.Random(seed)
    print(f"AR_TEST_SEED={seed}")  # shown on failure, to replay the same kill moments
    project.ar("session", "--max-failures", "1000", check=True)  # many kills in a row must not terminate the loop
    best_value = None
    for i in range(10):
        where = f"seed {seed}, iteration {i}"
        project.write_train(body(round(rng.uniform(0.1, 5.0), 3), sleep=0.3), note=f"iteration {i}")
        edited = project.train_py.read_bytes()
        runs_before = len(list((project.expr / "runs").iterdir()))
        mode = rng.choice(["client", "supervisor", "both"])
        client = start_ar(project, "run")
        killed_supervisor = False
        if mode == "client":
            time.sleep(rng.uniform(0.0, 0.8))  # anywhere from start-up (lock, repair, snapshot) to the end
            client.kill()
        else:
            # Anywhere in the supervisor's life: before the spawn, during training, while recording.
            wait_for(lambda: supervisor_pids(project, client.pid) or client.poll() is not None, what="the supervisor")
            time.sleep(rng.uniform(0.0, 0.5))
            if mode == "both" and rng.random() < 0.5:
                client.kill()
            # Until none is left: a middle fork killed just after it forked leaves a supervisor behind.
            while pids := supervisor_pids(project, client.pid):
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed_supervisor = True
                    except ProcessLookupError:
                        pass
            if mode == "both":
                client.kill()
        client.communicate(timeout=60)
        if not killed_supervisor:
            waited = project.ar("wait", timeout=60)  # re-attach: blocks until the run is recorded
            if waited.returncode == 0:
                assert len(out_lines(waited)) == 3, (where, waited.stdout)
            else:
                assert waited.returncode == 1 and "no runs yet" in waited.stderr, (where, waited)
        status = project.ar("status")
        assert status.returncode == 0, (where, status.stderr)
        started = len(list((project.expr / "runs").iterdir())) > runs_before
        if not started:  # killed before it took a run id: nothing ran, the edit stays
            assert project.train_py.read_bytes() == edited, where
        best = check_invariants(project, train_py_restored=started)
        last = project.rows()[-1][3:5] if started else None
        print(f"{where}: killed {mode} (supervisor found: {killed_supervisor}); run recorded as {last}")
        if best_value is not None:
            assert best is not None and best["value"] <= best_value, f"{where}: the best got lost"
        best_value = best["value"] if best else None

    number = len(list((project.expr / "runs").iterdir())) + 1
    project.write_train(body(0.01), note="final")
    lines = run_ok(project)
    assert lines[0].startswith(f"launched r{number:04d}"), lines
    check_invariants(project)


# ---------------------------------------------------------------- 3. torn results row


def test_torn_results_row_is_dropped(project: Project):
    project.write_train(printing("1.0"))
    run_ok(project)
    results = project.expr / "results.tsv"
    intact = results.read_text()
    with open(results, "a") as f:
        f.write("r0002\t2026-11-22T00:00:00Z\t0.5\tok\tadv")  # a kill mid-append: no newline
    assert project.ar("status").returncode == 0
    assert results.read_text() == intact
    project.write_train(printing("0.5"), note="after tear")
    assert run_ok(project)[0].startswith("launched r0002")
    rows = project.rows()
    assert [r[0] for r in rows] == ["r0001", "r0002"]
    assert rows[-1][3:5] == ["ok", "advance"] and rows[-1][6] == "0.5" and rows[-1][9] == "after tear"
    check_invariants(project)


# ---------------------------------------------------------------- 4. one iteration at a time


def test_second_run_is_refused_while_one_runs(project: Project):
    project.write_train(body(1.0, sleep=2), note="long")
    first = start_ar(project, "run")
    wait_for(lambda: "pid" in (active(project) or {}), what="the supervisor's .ar-active.json")

    second = project.ar("run")
    assert first.poll() is None, "the second run must fail at once, not wait for the first"
    assert second.returncode == 5
    assert second.stdout == ""
    line = one_line(second.stderr)
    assert "r0001" in line and "autoresearch wait" in line and "autoresearch stop" in line

    fresh = project.ar("session", "--resume", "fresh", "--yes")
    assert fresh.returncode == 5, fresh
    assert "r0001" in one_line(fresh.stderr)
    assert (project.expr / "runs" / "r0001").is_dir()
    assert first.poll() is None

    out, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("launched r0001") and "ok/advance" in lines[2]
    assert len(list((project.expr / "runs").iterdir())) == 1  # the refused run made no run dir
    check_invariants(project)


# ---------------------------------------------------------------- 5. runs outlive their caller


def test_run_wait_returns_and_the_run_finishes(project: Project):
    project.write_train(body(1.0, sleep=3), note="three seconds")
    started = time.monotonic()
    done = project.ar("run", "--wait", "1")
    assert done.returncode == 3, done
    assert time.monotonic() - started < 2.8
    lines = out_lines(done)
    assert len(lines) <= 2 and lines[0].startswith("launched r0001")
    assert "still running" in lines[-1] and "autoresearch wait" in lines[-1]

    status = project.ar("status")
    assert "running r0001" in status.stdout  # the run goes on without its caller
    assert not (project.expr / "runs" / "r0001" / "result.json").exists()

    waited = project.ar("wait")
    assert waited.returncode == 0, waited
    got = out_lines(waited)
    assert len(got) == 3 and got[0] == lines[0]
    assert got[1].startswith("metric val_loss=1 ") and got[2].startswith("verdict ok/advance")
    assert project.result("r0001")["wall_seconds"] >= 3
    check_invariants(project)


def test_killed_client_run_is_recorded_and_wait_reattaches(project: Project):
    project.write_train(body(1.0, sleep=2), note="client killed")
    client = start_ar(project, "run")
    wait_for(lambda: "pid" in (active(project) or {}), what="the supervisor's .ar-active.json")
    client.kill()
    client.communicate(timeout=10)

    short = project.ar("wait", "--wait", "0.3")
    assert short.returncode == 3, short
    line = one_line(short.stdout)
    assert "r0001" in line and "still running" in line and "autoresearch wait" in line

    result_file = project.expr / "runs" / "r0001" / "result.json"
    assert not result_file.exists(), "the run should still be going when `ar wait` starts"
    waited = project.ar("wait")
    finished_at = time.time()
    assert waited.returncode == 0, waited
    got = out_lines(waited)
    assert len(got) == 3 and got[0].startswith("launched r0001") and got[2].startswith("verdict ok/advance")
    assert finished_at - result_file.stat().st_mtime < 1.5, "ar wait should return as soon as the run is recorded"
    result = project.result("r0001")
    assert result["status"] == "ok" and result["wall_seconds"] >= 2
    assert [r[0] for r in project.rows()] == ["r0001"]
    check_invariants(project)

    # Nothing running: `ar wait` prints exactly what `ar run` printed for the last run.
    project.write_train(printing("0.5"), note="normal")
    printed = run_ok(project)
    again = project.ar("wait")
    assert again.returncode == 0
    assert out_lines(again) == printed and len(printed) == 3


# ---------------------------------------------------------------- 6. write discipline


@pytest.mark.parametrize("name", ["prepare.py", "program.md"])
def test_frozen_files_edited_refuse_the_run(project: Project, name: str):
    path = project.expr / name
    original = path.read_bytes()
    project.write_train(printing("1.0"))
    path.write_bytes(original + b"\n# tweak\n")
    done = project.ar("run")
    assert done.returncode == 1, done
    assert name in one_line(done.stderr)
    assert not list((project.expr / "runs").iterdir())
    path.write_bytes(original)
    assert run_ok(project)[0].startswith("launched r0001")
    check_invariants(project)


def test_hand_edited_session_is_refused(project: Project):
    path = project.expr / ".ar-session.json"
    original = path.read_bytes()
    data = json.loads(original)
    data["loop"]["seconds"] = 99
    path.write_text(json.dumps(data, indent=2))
    project.write_train(printing("1.0"))
    for args in (("run",), ("session", "--seconds", "5")):
        done = project.ar(*args)
        assert done.returncode == 1, done
        assert ".ar-session.json" in one_line(done.stderr)
    assert not list((project.expr / "runs").iterdir())
    path.write_bytes(original)
    assert run_ok(project)[0].startswith("launched r0001")


# ---------------------------------------------------------------- 7. ar session


def loop_settings(project: Project) -> dict:
    return json.loads(project.ar("session", "--json", check=True).stdout)["loop"]


def test_session_sets_and_shows_each_flag(project: Project):
    shown = out_lines(project.ar("session", check=True))
    assert 1 <= len(shown) <= 10 and "seconds 20" in "\n".join(shown)
    cases = [
        (["--seconds", "30"], {"seconds": 30}),
        (["--max-runs", "7"], {"max_runs": 7}),
        (["--plateau", "3"], {"plateau": 3}),
        (["--threshold", "0.25"], {"threshold": 0.25}),
        (["--max-failures", "2"], {"max_failures": 2}),
        (["--unlimited"], {"max_runs": None, "plateau": None, "threshold": None}),
        (["--chain-mode", "max_n", "--chain-max", "3"], {"chain_mode": "max_n", "chain_max": 3}),
        (["--chain-mode", "unlimited"], {"chain_mode": "unlimited"}),
        (["--chain-mode", "disabled"], {"chain_mode": "disabled"}),
        (["--resume", "revert-best"], {"resume": "revert-best"}),
        (["--resume", "continue"], {"resume": "continue"}),
        (["--ack-baseline"], {"baseline_acknowledged": True}),
    ]
    for args, expected in cases:
        done = project.ar("session", *args)
        assert done.returncode == 0, (args, done.stderr)
        loop = loop_settings(project)
        assert {k: loop[k] for k in expected} == expected, args
    assert loop["seconds"] == 30 and loop["max_failures"] == 2  # earlier settings kept
    text = project.ar("session", check=True).stdout
    assert "seconds 30" in text and "chain_mode disabled" in text and "baseline_acknowledged true" in text
    as_json = json.loads(project.ar("session", "--json", "--plateau", "4", check=True).stdout)
    assert as_json["loop"]["plateau"] == 4 and as_json["experiment"]["primary_metric"] == "val_loss"
    # The settings file stays valid for the loop.
    project.write_train(printing("1.0"))
    assert run_ok(project)[0] == "launched r0001: test"  # the session's budget is not repeated
    assert project.result("r0001")["seconds"] == 30


@pytest.mark.parametrize(
    "args",
    [
        ["--seconds=-1"],
        ["--max-runs", "0"],
        ["--plateau=-3"],
        ["--max-failures", "0"],
        ["--threshold", "nan"],
        ["--chain-mode", "max_n"],
        ["--chain-mode", "sometimes"],
        ["--resume", "later"],
        ["--unlimited", "--max-runs", "3"],
    ],
)
def test_session_bad_values_are_refused(project: Project, args: list[str]):
    before = (project.expr / ".ar-session.json").read_bytes()
    done = project.ar("session", *args)
    assert done.returncode == 1, (args, done)
    assert one_line(done.stderr).startswith("ar: ")
    assert (project.expr / ".ar-session.json").read_bytes() == before


def test_session_resume_fresh_and_revert_best(project: Project):
    project.write_train(printing("1.0"), note="one")
    run_ok(project)
    project.write_train(printing("0.5"), note="two")
    run_ok(project)
    project.write_train(printing("0.9"), note="three")
    run_ok(project)
    assert project.best()["run_id"] == "r0002"

    # revert-best: a hand-diverged train.py goes back to the best snapshot
    project.write_train(printing("7"), note="diverged")
    done = project.ar("session", "--resume", "revert-best")
    assert done.returncode == 0, done.stderr
    assert project.train_py.read_bytes() == (project.expr / "runs" / "r0002" / "train.py").read_bytes()

    # fresh without --yes: refused, nothing touched
    project.write_train(printing("7"), note="diverged")
    done = project.ar("session", "--resume", "fresh")
    assert done.returncode == 1
    assert "--yes" in one_line(done.stderr)
    assert len(project.rows()) == 3 and project.best()["run_id"] == "r0002"

    # fresh --yes: runs, best and results wiped (header kept), train.py back to the baseline
    done = project.ar("session", "--resume", "fresh", "--yes")
    assert done.returncode == 0, done.stderr
    assert (project.expr / "results.tsv").read_text() == HEADER + "\n"
    assert project.best() is None and not (project.expr / "best.json").exists()
    assert not list((project.expr / "runs").iterdir())
    assert project.train_py.read_bytes() == (project.expr / "train.py.baseline").read_bytes()
    check_invariants(project)
    status = project.ar("status", "--json", check=True)
    assert json.loads(status.stdout)["runs"] == 0

    project.write_train(printing("3.0"), note="restart")
    lines = run_ok(project)
    assert lines[0].startswith("launched r0001") and "ok/advance" in lines[2]
    check_invariants(project)


@pytest.mark.parametrize("point", ["wipe_after_best.json", "wipe_after_best_ckpt", "wipe_after_runs", "wipe_after_results.tsv"])
def test_a_wipe_killed_midway_is_finished_by_the_next_command(project: Project, point: str):
    """`--resume fresh --yes` is all or nothing: killed anywhere after it began, the next command
    completes it; no half-wiped experiment (a best rebuilt without its checkpoint, train.py left at
    the baseline under a best) is ever seen."""
    project.write_train("import os\nopen(os.path.join(os.environ['AR_CKPT_DIR'], 'w.pt'), 'w').write('w')\n" + printing("1.0"), note="one")
    run_ok(project)
    assert project.best()["checkpoint"]
    killed = project.ar("session", "--resume", "fresh", "--yes", env=clean_env(AR_CRASH_AT=point))
    assert killed.returncode == -signal.SIGKILL
    status = json.loads(project.ar("status", "--json", check=True).stdout)
    assert status["runs"] == 0 and project.best() is None
    assert (project.expr / "results.tsv").read_text() == HEADER + "\n"
    assert not list((project.expr / "runs").iterdir()) and not (project.expr / "best_ckpt").exists()
    assert project.train_py.read_bytes() == (project.expr / "train.py.baseline").read_bytes()
    assert not (project.expr / ".ar-wipe").exists() and not (project.expr / ".ar-wipe-trash").exists()
    check_invariants(project)


def _five_runs(project: Project) -> str:
    for i, value in enumerate(["5", "4", "6", "3", "7"]):
        project.write_train(printing(value), note=f"run {i + 1}")
        run_ok(project)
    return (project.expr / "results.tsv").read_text()


def _garbage_in_the_middle(text: str) -> str:
    lines = text.splitlines(keepends=True)
    return "".join([*lines[:3], "garbage line\n", *lines[3:]])


def _garbage_at_the_end(text: str) -> str:
    return text + "garbage line\n"


def _row_deleted(text: str) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[:2] + lines[3:])  # r0002 gone


@pytest.mark.parametrize("damage", [_garbage_in_the_middle, _garbage_at_the_end, _row_deleted, None])
def test_a_hand_damaged_log_is_rebuilt_from_the_runs(project: Project, damage):
    """results.tsv is derived; the runs' result.json are the journal. A log edited by hand (or
    counters ahead of it: damage None) is rebuilt from them, and the old file is set aside, named."""
    good = _five_runs(project)
    results = project.expr / "results.tsv"
    if damage is None:
        state = json.loads((project.expr / ".ar-state.json").read_text())
        state.update(last_run=10, runs=11)
        (project.expr / ".ar-state.json").write_text(json.dumps(state))
    else:
        results.write_text(damage(good))
    status = project.ar("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["runs"] == 5
    assert results.read_text() == good
    if damage is not None:
        (aside,) = project.expr.glob("results.tsv.damaged-*")
        assert aside.read_text() == damage(good)
        assert status.stderr.count("\n") == 1 and aside.name in status.stderr and "rebuilt" in status.stderr
    assert project.ar("status").stderr == ""  # once
    project.write_train(printing("2"), note="after")
    assert run_ok(project)[0].startswith("launched r0006")
    assert [row[0] for row in project.rows()] == [f"r000{i}" for i in range(1, 7)]
    check_invariants(project)


@pytest.mark.parametrize("also_state", [False, True])
def test_a_lost_log_is_rebuilt_from_the_runs(project: Project, also_state: bool):
    good = _five_runs(project)
    (project.expr / "results.tsv").unlink()
    if also_state:
        (project.expr / ".ar-state.json").unlink()
    status = project.ar("status")
    assert status.returncode == 0 and "was missing; rebuilt" in status.stderr
    assert (project.expr / "results.tsv").read_text() == good
    assert project.best()["run_id"] == "r0004"
    project.write_train(printing("9"), note="after")
    assert run_ok(project)[0].startswith("launched r0006")  # nothing old is replayed
    assert project.result("r0006")["note"] == "after" and project.best()["run_id"] == "r0004"


def test_a_live_run_is_recognised_without_its_lock_file(project: Project):
    """.ar-lock deleted during a run: the next `ar run` sees the live owner in .ar-active.json
    (pid and start time), refuses, and never kills the run or judges it as dead."""
    project.write_train(printing("1.0"), note="base")
    run_ok(project)
    project.write_train("import time\ntime.sleep(2.5)\n" + printing("0.5"), note="slow")
    started = project.ar("run", "--wait", "0.5")
    assert started.returncode == 3, started.stdout + started.stderr
    (project.expr / ".ar-lock").unlink()
    project.write_train(printing("0.1"), note="the agent's next edit")
    second = project.ar("run")
    assert second.returncode == 5 and "r0002" in one_line(second.stderr), second
    result = project.expr / "runs" / "r0002" / "result.json"
    assert wait_until(result.exists, 30)
    assert project.result("r0002")["status"] == "ok" and project.result("r0002")["verdict"] == "advance"
    assert not (project.expr / "runs" / "r0003").exists()
    assert project.ar("status").returncode == 0 and [row[0] for row in project.rows()] == ["r0001", "r0002"]


def test_a_stray_run_directory_is_not_a_run_that_died(project: Project):
    project.write_train(printing("1.0"), note="base")
    run_ok(project)
    project.write_train(printing("0.5"), note="edit")
    (project.expr / "runs" / "r0002").mkdir()
    done = project.ar("run")
    assert done.returncode == 0, done.stderr
    assert "r0002 had no train.py snapshot" in done.stderr and ".ar-stray-r0002-" in done.stderr
    assert [row[0] for row in project.rows()] == ["r0001", "r0002"]
    assert project.result("r0002")["note"] == "edit" and project.best()["run_id"] == "r0002"
    check_invariants(project)


def test_an_envless_daemon_is_ended_after_the_supervisor_is_killed(project: Project, tmp_path: Path):
    """The supervisor records every process it sees (.ar-processes: pid and start time); killed
    with SIGKILL, it leaves that record to the repair, which ends what the AR_RUN_DIR tag misses:
    here a detached daemon started with an empty environment."""
    pid_file = tmp_path / "daemon.pid"
    project.write_train(
        "import subprocess, time\n"
        f"subprocess.run(['env', '-i', 'setsid', '-f', '/bin/sh', '-c', 'echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; trap \"\" TERM; exec sleep 300'])\n"
        "time.sleep(60)\n", note="daemon")
    assert project.ar("run", "--wait", "0.2").returncode == 3
    assert wait_until(pid_file.exists, 10)
    daemon = int(pid_file.read_text())
    record = project.expr / "runs" / "r0001" / ".ar-processes"
    assert wait_until(lambda: record.exists() and f"{daemon} " in record.read_text(), 10)
    supervisor = json.loads((project.expr / ".ar-active.json").read_text())["pid"]
    os.kill(supervisor, signal.SIGKILL)
    assert wait_until(lambda: not os.path.exists(f"/proc/{supervisor}") or open(f"/proc/{supervisor}/stat").read().split(") ")[1][0] == "Z", 10)
    status = project.ar("status", timeout=60)
    assert status.returncode == 0, status.stderr
    assert project.result("r0001")["status"] == "crash"
    assert wait_until(lambda: gone(daemon), 5), "the env-less daemon survived the repair"
    check_invariants(project)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MiB tmpfs: a disk that a run can really fill."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# Prints the metric and saves a checkpoint, then fills the disk; with FREE_PAGES > 0 gives that many
# 4 KiB pages back, so that result.json still fits but what follows does not.
FILL_DISK = """
import os
val = {value}
ckpt = os.path.join(os.environ["AR_CKPT_DIR"], "model.pt")
with open(ckpt, "wb") as f:
    f.write(b"w" * 1000)
print(f"val_loss={{val}}", flush=True)
fd = os.open(os.path.join(os.environ["AR_EXPR_DIR"], "..", "..", "filler"), os.O_WRONLY | os.O_CREAT)
size = 0
try:
    while True:
        size += os.write(fd, b"x" * 4096)
except OSError:
    pass
os.ftruncate(fd, max(0, size - {free_pages} * 4096))
os.close(fd)
"""


@pytest.mark.parametrize("free_pages", [0, 1], ids=["full before result.json", "full just after result.json"])
def test_a_full_disk_loses_no_finished_run(small_disk: Path, free_pages: int):
    """The training finished, then the disk filled: `ar run` says so in one line (where, and what
    to do), and once space is freed the next command judges the run on its log. The better run
    becomes the best with its checkpoint; nothing is recorded as a crash."""
    from conftest import make_project

    project = make_project(small_disk / "proj")
    project.write_train(printing("1.0"), note="base")
    run_ok(project)
    project.write_train(FILL_DISK.format(value=0.5, free_pages=free_pages), note="better, then the disk fills")
    done = project.ar("run")
    filler = small_disk / "proj" / "filler"
    assert filler.exists(), done.stdout + done.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    last = out_lines(done)[-1]
    assert last.startswith("ar: disk full") and str(small_disk) in last and "fix:" in last, last
    assert ("result was written" in last) == (free_pages > 0), last
    assert len(out_lines(done)) == 2  # launched, then the disk line
    filler.unlink()
    status = project.ar("status")
    assert status.returncode == 0, status.stderr
    result = project.result("r0002")
    assert (result["status"], result["verdict"]) == ("ok", "advance"), result
    best = check_invariants(project)
    assert best["run_id"] == "r0002" and best["checkpoint"]
    assert (project.expr / best["checkpoint"]).exists()
    assert [row[0] for row in project.rows()] == ["r0001", "r0002"]


# ---------------------------------------------------------------- only train.py may change


def _edit_best_json(project: Project) -> str:
    best = project.best()
    best["value"] = -1.0
    (project.expr / "best.json").write_text(json.dumps(best))
    return "best.json"


def _edit_best_snapshot(project: Project) -> str:
    snapshot = project.expr / "runs" / project.best()["run_id"] / "train.py"
    snapshot.write_text(snapshot.read_text() + "# better\n")
    return "best run's train.py"


def _edit_a_value_in_place(project: Project) -> str:
    results = project.expr / "results.tsv"
    results.write_text(results.read_text().replace("\t0.5\t", "\t0.1\t"))  # same size
    return "results.tsv"


def _add_a_run(project: Project) -> str:
    (project.expr / "runs" / "r0009").mkdir()
    return "runs/"


@pytest.mark.parametrize("edit", [_edit_best_json, _edit_best_snapshot, _edit_a_value_in_place, _add_a_run])
def test_a_change_to_anything_but_train_py_is_refused(project: Project, edit):
    """Whatever wrote it (a hook-proof `python3 -c`, say), `ar run` refuses in one line naming what
    changed; nothing is launched."""
    project.write_train(printing("1.0"), note="one")
    run_ok(project)
    project.write_train(printing("0.5"), note="two")
    run_ok(project)
    name = edit(project)
    project.write_train(printing("0.2"), note="three")
    done = project.ar("run")
    assert done.returncode == 1, done.stdout
    line = one_line(done.stderr)
    assert name in line and "changed since the last run" in line and "fix:" in line, line
    assert len(project.rows()) == 2 and not (project.expr / "runs" / "r0003").exists()


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args], cwd=root, check=True, capture_output=True)


def _git_host(tmp_path: Path, local_change: str) -> tuple[Path, Project]:
    """A host project in git (model.py, notes.txt committed), notes.txt changed but not committed
    before the experiment is set up in it."""
    from conftest import make_project

    root = tmp_path / "host"
    root.mkdir()
    (root / "model.py").write_text("WIDTH = 8\n")
    (root / "notes.txt").write_text("v1\n")
    _git(root, "init", "-q")
    _git(root, "add", "model.py", "notes.txt")
    _git(root, "commit", "-qm", "host")
    (root / "notes.txt").write_text(local_change)
    return root, make_project(root)


def test_a_change_to_the_projects_tracked_files_is_refused(tmp_path: Path):
    """The host project's git-tracked files are compared with how the last run left them:
    an edit between runs is refused and named; a run's own writes and untracked outputs are not edits."""
    root, project = _git_host(tmp_path, "a local change the user had already made\n")
    # the run itself writes a tracked file and an untracked output: both are its own doing
    project.write_train("open('notes.txt', 'a').write('run\\n')\nopen('out.log', 'w').write('x')\n" + printing("1.0"), note="one")
    run_ok(project)
    project.write_train(printing("0.5"), note="two")
    run_ok(project)
    (root / "scratch.txt").write_text("untracked: not an edit\n")
    project.write_train(printing("0.4"), note="three")
    run_ok(project)

    (root / "model.py").write_text("WIDTH = 4096\n")  # the agent edits the host's code
    project.write_train(printing("0.1"), note="four")
    done = project.ar("run")
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert "git-tracked files" in line and "model.py" in line and "git checkout -- model.py" in line, line
    _git(root, "checkout", "--", "model.py")
    assert run_ok(project)[0].startswith("launched r0004")


def test_a_commit_alone_is_no_change_to_the_project(tmp_path: Path):
    """Committing (the experiment's files, or a host file as it stands) moves HEAD but changes no
    content: the next run goes ahead. A commit that changes a file's content is refused."""
    root, project = _git_host(tmp_path, "v2, not committed yet\n")
    project.write_train(printing("1.0"), note="one")
    run_ok(project)
    _git(root, "add", ".autoresearch/exp/train.py", ".autoresearch/exp/results.tsv", ".autoresearch/exp/best.json", "notes.txt")
    _git(root, "commit", "-qm", "the experiment so far")
    project.write_train(printing("0.5"), note="two")
    assert run_ok(project)[0].startswith("launched r0002")
    (root / "model.py").write_text("WIDTH = 4096\n")
    _git(root, "commit", "-qam", "the agent commits a change to the host")
    project.write_train(printing("0.4"), note="three")
    done = project.ar("run")
    assert done.returncode == 1 and "model.py" in one_line(done.stderr), done.stderr


def test_session_changes_the_runner(project: Project):
    project.train_py.write_text("RUN_NOTE = 'args'\nimport sys\nprint('val_loss=' + ('0.5' if '--half' in sys.argv else '1.0'))\n")
    run_ok(project)
    shown = project.ar("session", "--runner", "{python} {train_py} --half", check=True).stdout
    assert "runner {python} {train_py} --half" in shown.splitlines()[0]
    assert json.loads(project.ar("session", "--json", check=True).stdout)["experiment"]["runner"] == "{python} {train_py} --half"
    project.train_py.write_text(project.train_py.read_text().replace("'args'", "'args again'"))
    run_ok(project)
    assert project.result("r0002")["primary"]["value"] == 0.5
    refused = project.ar("session", "--runner", "  ")
    assert refused.returncode == 1 and "--runner is empty" in refused.stderr
