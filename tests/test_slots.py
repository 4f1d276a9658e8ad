"""Several candidates at once (SPEC §10): `ar session --slots N`, `ar submit`, `ar wait --any`.

Real supervisors and real training processes. Concurrency is proven with gates (files a run
waits for), never with durations: a run that waits for a sibling's start file can only finish
if both ran at the same time.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from conftest import Project, clean_env, make_project
from processes import wait_for

GATE_WAIT = 60  # a gated run gives up (and crashes) after this long: a broken test never hangs


def gated(value: float, gate: Path, wait_for: list[str] = (), note: str = "candidate") -> str:
    """A train.py that marks its start in `gate`, waits until the named marks (or `release-<note>`)
    exist, then prints val_loss=value and its environment."""
    return (
        f"RUN_NOTE = {note!r}\n"
        "import json, os, pathlib, sys, time\n"
        f"gate = pathlib.Path({str(gate)!r})\n"
        "run = os.environ['AR_RUN_ID']\n"
        "(gate / f'started-{run}').write_text(json.dumps({k: v for k, v in os.environ.items() if k.startswith(('AR_', 'CUDA'))}))\n"
        f"wanted = {list(wait_for)!r}\n"
        f"deadline = time.time() + {GATE_WAIT}\n"
        "while not all((gate / name).exists() for name in wanted):\n"
        "    if time.time() > deadline:\n"
        "        sys.exit('gate never opened')\n"
        "    time.sleep(0.02)\n"
        f"print('val_loss={value}')\n"
    )


def slots_project(tmp_path: Path, slots: int, *session: str) -> tuple[Project, Path]:
    project = make_project(tmp_path / "p")
    project.write_train("print('val_loss=5')\n", note="baseline")
    project.ar("run", check=True)
    project.ar("session", "--slots", str(slots), *session, check=True)
    gate = tmp_path / "gate"
    gate.mkdir()
    return project, gate


def submit(project: Project, source: str) -> str:
    project.train_py.write_text(source)
    done = project.ar("submit", check=True)
    return done.stdout.strip()


def wait_any(project: Project, wait: float = 90) -> list[str]:
    done = project.ar("wait", "--any", "--wait", str(wait), timeout=wait + 60)
    assert done.returncode in (0, 4), done.stdout + done.stderr
    return done.stdout.splitlines()


def test_submitted_runs_run_at_once_and_are_collected_as_they_finish(tmp_path: Path) -> None:
    project, gate = slots_project(tmp_path, 3)
    baseline = project.train_py.read_text()
    # r0002 waits for r0003 and r0004 to have started: it can only finish if all three run together.
    lines = [submit(project, gated(4.0, gate, ["started-r0003", "started-r0004"], note="a")),
             submit(project, gated(3.0, gate, ["release-b"], note="b")),
             submit(project, gated(4.5, gate, ["release-c"], note="c"))]
    assert lines == ["submitted r0002 on slot 1; 1 running, 0 queued",
                     "submitted r0003 on slot 2; 2 running, 0 queued",
                     "submitted r0004 on slot 3; 3 running, 0 queued"]
    assert project.train_py.read_text() == baseline  # each submit restored train.py to the best at once

    first = wait_any(project)
    assert first[0] == "launched r0002: a" and "verdict ok/advance" in first[2], first  # 4.0 beats the baseline's 5
    (gate / "release-c").touch()
    second = wait_any(project)
    assert second[0] == "launched r0004: c" and "best before 4 r0002" in second[1] and "verdict ok/revert" in second[2], second
    (gate / "release-b").touch()
    third = wait_any(project)
    assert third[0] == "launched r0003: b" and "best before 4 r0002" in third[1] and "advance" in third[2], third
    assert wait_any(project) == ["no run in flight; start one with `ar submit`"]

    assert [row[0] for row in project.rows()] == ["r0001", "r0002", "r0004", "r0003"]  # finish order
    assert project.best()["run_id"] == "r0003"
    assert project.train_py.read_text() == (project.expr / "runs" / "r0003" / "train.py").read_text()  # untouched: moved to the best
    envs = {run: json.loads((gate / f"started-{run}").read_text()) for run in ("r0002", "r0003", "r0004")}
    assert {run: env["AR_SLOT"] for run, env in envs.items()} == {"r0002": "1", "r0003": "2", "r0004": "3"}
    assert {env["CUDA_VISIBLE_DEVICES"] for env in envs.values()} == {"0", "1", "2"}  # one device each by default
    status = project.ar("status", check=True).stdout
    assert "running none (0/3 slots, local)" in status and "runs 4" in status


def test_the_queue_runs_in_submission_order_and_is_bounded(tmp_path: Path) -> None:
    project, gate = slots_project(tmp_path, 2, "--gpus-per-slot", "0")
    assert submit(project, gated(4.0, gate, ["release-a"], note="a")).startswith("submitted r0002 on slot 1")
    assert submit(project, gated(4.1, gate, ["release-b"], note="b")).startswith("submitted r0003 on slot 2")
    assert submit(project, gated(3.0, gate, [], note="c")) == "queued r0004 (all 2 slots busy); 2 running, 1 queued"
    assert submit(project, gated(3.5, gate, [], note="d")) == "queued r0005 (all 2 slots busy); 2 running, 2 queued"
    project.train_py.write_text(gated(1.0, gate, [], note="e"))
    refused = project.ar("submit")
    assert refused.returncode == 5 and "all 2 slots are busy and 2 runs wait in the queue" in refused.stderr, refused.stderr
    assert not (project.expr / "runs" / "r0006").exists()
    assert "CUDA_VISIBLE_DEVICES" not in json.loads((gate / "started-r0002").read_text())  # --gpus-per-slot 0: left alone

    (gate / "release-b").touch()  # slot 2 frees first and takes the queue's head, then the next
    assert wait_any(project)[0] == "launched r0003: b"
    wait_for(lambda: (gate / "started-r0005").exists(), "the queue's second run to start on slot 2")
    assert json.loads((gate / "started-r0004").read_text())["AR_SLOT"] == "2"
    assert json.loads((gate / "started-r0005").read_text())["AR_SLOT"] == "2"
    assert not (project.expr / ".ar-queue.json").exists()
    (gate / "release-a").touch()
    collected = [wait_any(project)[0] for _ in range(3)]
    assert sorted(collected) == ["launched r0002: a", "launched r0004: c", "launched r0005: d"]
    rows = [row[0] for row in project.rows()]
    assert rows[:3] == ["r0001", "r0003", "r0004"] and sorted(rows) == ["r0001", "r0002", "r0003", "r0004", "r0005"]


def test_a_candidate_being_written_is_never_overwritten_by_a_finishing_run(tmp_path: Path) -> None:
    project, gate = slots_project(tmp_path, 2)
    submit(project, gated(2.0, gate, ["release-a"], note="a"))
    editing = project.train_py.read_text().replace("val_loss=5", "val_loss=4.5")  # the agent writes the next one
    project.train_py.write_text(editing)
    (gate / "release-a").touch()
    assert "verdict ok/advance" in wait_any(project)[2]
    assert project.train_py.read_text() == editing  # kept: the agent's edit, based on the best it saw
    assert project.best()["run_id"] == "r0002"


def test_ar_run_beside_submitted_runs_and_busy_errors(tmp_path: Path) -> None:
    project, gate = slots_project(tmp_path, 2, "--max-runs", "4")
    submit(project, gated(4.0, gate, ["release-a"], note="a"))
    project.train_py.write_text(gated(3.0, gate, [], note="direct"))
    done = project.ar("run", check=True)  # the free slot, followed to its verdict
    assert done.stdout.splitlines()[0] == "launched r0003: direct" and "advance" in done.stdout
    submit(project, gated(2.0, gate, ["release-b"], note="b"))
    busy = project.ar("run")
    assert busy.returncode == 5 and "2 runs of 'exp' are in flight (r0002 r0004)" in busy.stderr, busy.stderr
    full = project.ar("submit")  # 2 finished + 2 in flight = max_runs 4: one more would overshoot
    assert full.returncode == 5 and "max_runs 4 is reached counting the 2 runs in flight" in full.stderr, full.stderr
    changing = project.ar("session", "--slots", "3")
    assert changing.returncode == 5 and "in flight" in changing.stderr, changing.stderr
    stop = project.ar("stop")
    assert stop.returncode != 0 and "stop --all`" in stop.stderr, stop.stderr
    (gate / "release-a").touch()
    (gate / "release-b").touch()
    wait_any(project)
    last = wait_any(project)
    assert "TERMINATED by max_runs" in last[2], last


def test_stop_all_interrupts_every_run_and_drops_the_queue(tmp_path: Path) -> None:
    project, gate = slots_project(tmp_path, 2)
    for note in ("a", "b", "c"):
        submit(project, gated(4.0, gate, ["never"], note=note))
    wait_for(lambda: (gate / "started-r0002").exists() and (gate / "started-r0003").exists(), "both slots to start")
    done = project.ar("stop", "--all", timeout=180, check=True)
    dropped, *verdicts = done.stdout.splitlines()
    assert dropped == "dropped r0004 from the queue", done.stdout
    assert sorted(line.split(" | ")[0] for line in verdicts) == ["verdict interrupted/interrupted"] * 2, done.stdout
    assert [row[0] for row in project.rows()][1:] in (["r0002", "r0003"], ["r0003", "r0002"])
    assert not (project.expr / "runs" / "r0004").exists()  # queued, never started: dropped, no row
    assert not (gate / "started-r0004").exists()
    refused = project.ar("submit")
    assert refused.returncode == 4 and "terminated (manual)" in refused.stderr, refused.stderr


def test_killed_supervisor_is_repaired_and_its_queue_still_runs(tmp_path: Path) -> None:
    project, gate = slots_project(tmp_path, 2)
    submit(project, gated(4.0, gate, ["never"], note="doomed"))
    submit(project, gated(4.2, gate, ["release-b"], note="b"))
    submit(project, gated(3.0, gate, [], note="queued"))
    wait_for(lambda: (gate / "started-r0002").exists(), "r0002 to start")
    record = json.loads((project.expr / ".ar-active.json").read_text())
    assert record["run_id"] == "r0002"
    os.kill(record["pid"], signal.SIGKILL)  # slot 1's supervisor dies; its training is left behind
    # The next command records r0002 as a crash (ending its processes) and starts the queued run on slot 1.
    first = wait_any(project)
    assert first[0] == "launched r0002: doomed" and "verdict crash/crash" in first[2], first
    assert "ar was killed before the run was judged" in project.result("r0002")["reason"]
    queued = wait_any(project)
    assert queued[0] == "launched r0004: queued" and "advance" in queued[2], queued
    (gate / "release-b").touch()
    assert wait_any(project)[0] == "launched r0003: b"
    assert sorted(row[0] for row in project.rows()) == ["r0001", "r0002", "r0003", "r0004"]
    assert len(project.rows()) == 4  # exactly one row per run
    assert project.best()["run_id"] == "r0004"


@pytest.mark.parametrize("point", ["after_watch", "after_result", "after_row"])
def test_kill_while_recording_beside_another_run_loses_nothing(tmp_path: Path, point: str) -> None:
    """A supervisor killed mid-record while another slot keeps running: the other's record
    repairs it first, and every run gets exactly one row."""
    project, gate = slots_project(tmp_path, 2)
    env = clean_env(AR_CRASH_AT=point)
    submit(project, gated(3.0, gate, ["release-b"], note="b"))
    project.train_py.write_text(gated(4.0, gate, [], note="killed"))
    assert project.ar("submit", env=env, check=True).stdout.startswith("submitted r0003 on slot 2")
    wait_for(lambda: not _slot_held(project.expr / ".ar-slot-2.lock"), "r0003's supervisor to die at the fault")
    (gate / "release-b").touch()
    reported = [wait_any(project)[0], wait_any(project)[0]]
    assert sorted(reported) == ["launched r0002: b", "launched r0003: killed"], reported
    rows = [row[0] for row in project.rows()]
    assert sorted(rows) == ["r0001", "r0002", "r0003"] and len(rows) == 3
    assert project.best()["run_id"] == "r0002"


def _slot_held(lock: Path) -> bool:
    import fcntl

    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_one_slot_queues_a_second_submit_and_confirmations_beside_a_submit(tmp_path: Path) -> None:
    project, gate = slots_project(tmp_path, 1)
    assert submit(project, gated(4.0, gate, ["release-a"], note="a")).startswith("submitted r0002 on slot 1")
    assert submit(project, gated(3.0, gate, [], note="b")) == "queued r0003 (all 1 slots busy); 1 running, 1 queued"
    (gate / "release-a").touch()
    assert [wait_any(project)[0], wait_any(project)[0]] == ["launched r0002: a", "launched r0003: b"]

    project.ar("session", "--slots", "2", "--confirm", "1", check=True)
    submit(project, gated(1.0, gate, ["release-c"], note="c"))  # an apparent gain: its confirmation follows on slot 1
    (gate / "release-c").touch()
    wait_for(lambda: (gate / "started-r0005").exists(), "the confirmation of r0004")
    assert submit(project, gated(2.0, gate, [], note="d")).startswith("submitted r0006")  # beside it: no seal refusal
    reported = [wait_any(project) for _ in range(2)]
    assert sorted(lines[0].split(":")[0] for lines in reported) == ["launched r0005", "launched r0006"], reported
    assert wait_any(project) == ["no run in flight; start one with `ar submit`"]  # the series counted once


def test_a_repair_killed_while_recording_an_out_of_order_orphan_is_finished_by_the_next(tmp_path: Path) -> None:
    project, gate = slots_project(tmp_path, 2)
    submit(project, gated(4.0, gate, ["never"], note="orphan"))
    submit(project, gated(3.0, gate, [], note="quick"))
    assert wait_any(project)[0] == "launched r0003: quick"  # recorded first: r0002 is below the highest run now
    record = json.loads((project.expr / ".ar-active.json").read_text())
    os.kill(record["pid"], signal.SIGKILL)
    killed = project.ar("status", env=clean_env(AR_CRASH_AT="after_result"))  # its repair dies mid-record
    assert killed.returncode == -signal.SIGKILL
    assert (project.expr / "runs" / "r0002" / "result.json").exists()
    status = project.ar("status", check=True).stdout
    assert "runs 3" in status, status
    assert sorted(row[0] for row in project.rows()) == ["r0001", "r0002", "r0003"]


def test_each_slot_gets_its_share_of_the_visible_gpus(tmp_path: Path) -> None:
    """Device lists only (no GPU here): slot k gets its G devices out of the user's own
    CUDA_VISIBLE_DEVICES, G defaulting to the runner's processes per run."""
    # a runner naming 2 processes per run, as `--launcher torchrun --nproc-per-node 2` writes one (no torch needed here)
    project = make_project(tmp_path / "p", "--runner", "{python} {train_py} --nproc-per-node 2")
    gate = tmp_path / "gate"
    gate.mkdir()
    three = clean_env(CUDA_VISIBLE_DEVICES="4,5,6")
    refused = project.ar("session", "--slots", "2", env=three)
    assert refused.returncode == 1 and "2 slots x 2 GPUs need 4 GPUs; 3 are visible" in refused.stderr, refused.stderr
    four = clean_env(CUDA_VISIBLE_DEVICES="4,5,6,7")
    project.ar("session", "--slots", "2", env=four, check=True)
    for note in ("a", "b"):
        project.train_py.write_text(gated(1.0, gate, ["started-r0001", "started-r0002"], note=note))
        project.ar("submit", env=four, check=True)
    devices = []
    for _ in range(2):
        done = project.ar("wait", "--any", "--wait", "60", env=four, timeout=120)
        run_id = done.stdout.split()[1].rstrip(":")
        devices.append(json.loads((gate / f"started-{run_id}").read_text())["CUDA_VISIBLE_DEVICES"])
    assert sorted(devices) == ["4,5", "6,7"]


@pytest.mark.parametrize("flags, message", [
    (["--slots", "0"], "--slots 0 is out of range"),
    (["--slots", "65"], "--slots 65 is out of range"),
    (["--gpus-per-slot", "-1"], "--gpus-per-slot -1 is out of range"),
    (["--backend", "k8s"], "--backend 'k8s' is unknown (fix: use one of: local, slurm)"),
    (["--sbatch-args", "--mem='16G"], "--sbatch-args cannot be parsed (No closing quotation)"),
])
def test_bad_slot_settings_are_refused_in_one_line_and_change_nothing(project: Project, flags: list[str], message: str) -> None:
    before = (project.expr / ".ar-session.json").read_bytes()
    done = project.ar("session", *flags)
    assert done.returncode == 1 and message in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert (project.expr / ".ar-session.json").read_bytes() == before


def test_the_slurm_backend_needs_sbatch(project: Project) -> None:
    done = project.ar("session", "--backend", "slurm", env=clean_env(PATH="/nonexistent"))
    assert done.returncode == 1 and "--backend slurm needs sbatch, which is not on PATH" in done.stderr, done.stderr
