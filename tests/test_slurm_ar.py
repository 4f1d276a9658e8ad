"""`ar` with `--backend slurm` on a real single-node Slurm cluster (tests/slurm_cluster.py):
every run a batch job, judged by ar, under ar's own clock, re-attached by job id after a kill."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from conftest import Project, clean_env, make_project
from processes import wait_for


def slurm_project(tmp_path: Path, cluster, *session: str) -> tuple[Project, dict]:
    env = clean_env(**cluster.env)
    project = make_project(tmp_path / "p")
    project.ar("session", "--backend", "slurm", "--partition", cluster.partition, "--gpus-per-slot", "0", *session, env=env, check=True)
    return project, env


def job_state(cluster, job_id: str) -> str:
    done = cluster.client("squeue", "-h", "-j", job_id, "-o", "%T")
    return done.stdout.strip()


def processes_of(run_dir: Path) -> list[int]:
    """Live processes whose command line names the run's directory (its train.py snapshot)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if str(run_dir).encode() in cmdline or f"{run_dir.parent.name}/{run_dir.name}".encode() in cmdline:
                found.append(int(entry))
    return found


def test_runs_are_jobs_ok_crash_and_a_timeout_that_ignores_sigterm(tmp_path: Path, slurm_cluster) -> None:
    project, env = slurm_project(tmp_path, slurm_cluster, "--slots", "2")
    project.write_train("import os\nprint('job', os.environ.get('SLURM_JOB_ID'))\nprint('val_loss=2')\n", note="baseline")
    first = project.ar("run", "--wait", "120", env=env, timeout=180)
    assert first.returncode == 0 and "verdict ok/advance" in first.stdout, first.stdout + first.stderr
    result = project.result("r0001")
    assert result["job_id"].isdigit()
    assert f"job {result['job_id']}" in (project.expr / "runs" / "r0001" / "run.log").read_text()  # ran inside the job

    project.write_train("raise SystemExit(3)\n", note="crash")
    assert project.ar("submit", env=env, check=True).stdout.startswith("submitted r0002")
    project.write_train("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('val_loss=1', flush=True)\ntime.sleep(600)\n",
                        note="stubborn")
    assert project.ar("submit", "--seconds", "3", env=env, check=True).stdout.startswith("submitted r0003")
    verdicts = {}
    for _ in range(2):
        done = project.ar("wait", "--any", "--wait", "150", env=env, timeout=200)
        lines = done.stdout.splitlines()
        assert len(lines) == 3, done.stdout + done.stderr
        verdicts[lines[0].split(":")[0]] = lines[2]
    assert "verdict crash/crash" in verdicts["launched r0002"] and "exited with code 3" in verdicts["launched r0002"]
    assert "verdict timeout/timeout" in verdicts["launched r0003 (3s budget)"]
    stubborn = project.result("r0003")
    assert job_state(slurm_cluster, stubborn["job_id"]) == ""  # gone from the queue
    wait_for(lambda: processes_of(project.expr / "runs" / "r0003") == [], "the job's processes to be gone", timeout=15)
    assert [row[3] for row in project.rows()] == ["ok", "crash", "timeout"]
    assert project.best()["run_id"] == "r0001"


def test_stop_cancels_the_job(tmp_path: Path, slurm_cluster) -> None:
    project, env = slurm_project(tmp_path, slurm_cluster)
    project.write_train("import time\nprint('started', flush=True)\ntime.sleep(600)\n", note="long")
    assert project.ar("submit", env=env, check=True).stdout.startswith("submitted r0001")
    log = project.expr / "runs" / "r0001" / "run.log"
    wait_for(lambda: log.exists() and "started" in log.read_text(), "the job to start")
    done = project.ar("stop", env=env, timeout=180)
    assert done.returncode == 0 and "verdict interrupted/interrupted" in done.stdout, done.stdout + done.stderr
    assert job_state(slurm_cluster, project.result("r0001")["job_id"]) == ""
    wait_for(lambda: processes_of(project.expr / "runs" / "r0001") == [], "the job's processes to be gone", timeout=15)


def test_a_killed_supervisor_is_replaced_and_the_job_judged(tmp_path: Path, slurm_cluster) -> None:
    project, env = slurm_project(tmp_path, slurm_cluster)
    gate = tmp_path / "release"
    project.write_train(f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.1)\nprint('val_loss=1.5')\n", note="gated")
    assert project.ar("submit", env=env, check=True).stdout.startswith("submitted r0001")
    job_file = project.expr / "runs" / "r0001" / ".ar-job.json"
    wait_for(job_file.exists, "the job to be submitted")
    job_id = json.loads(job_file.read_text())["job_id"]
    wait_for(lambda: "pid" in json.loads((project.expr / ".ar-active.json").read_text() or "{}"), "the supervisor's record")
    first = json.loads((project.expr / ".ar-active.json").read_text())["pid"]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{first}").exists(), "the supervisor to die")
    assert job_state(slurm_cluster, job_id) in ("PENDING", "RUNNING")  # the job does not die with ar

    status = project.ar("status", env=env, check=True)  # repair re-attaches: a new supervisor follows the job
    assert "runs 0" in status.stdout, status.stdout
    wait_for(lambda: json.loads((project.expr / ".ar-active.json").read_text() or "{}").get("pid") not in (None, first),
             "a new supervisor")
    gate.touch()
    done = project.ar("wait", "--any", "--wait", "120", env=env, timeout=180)
    assert "verdict ok/advance" in done.stdout, done.stdout + done.stderr
    result = project.result("r0001")
    assert result["job_id"] == job_id and result["primary"]["value"] == 1.5
    assert len(project.rows()) == 1


def test_two_killed_supervisors_get_one_new_supervisor_each(tmp_path: Path, slurm_cluster) -> None:
    project, env = slurm_project(tmp_path, slurm_cluster, "--slots", "2")
    gate = tmp_path / "release"
    project.write_train(f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.1)\nprint('val_loss=1.5')\n", note="gated")
    for run_id in ("r0001", "r0002"):
        assert project.ar("submit", env=env, check=True).stdout.startswith(f"submitted {run_id}")
    records = [project.expr / ".ar-active.json", project.expr / ".ar-slot-2.json"]
    for job in ("r0001", "r0002"):
        wait_for((project.expr / "runs" / job / ".ar-job.json").exists, f"{job}'s job")
    wait_for(lambda: all("pid" in json.loads(r.read_text() or "{}") for r in records), "both supervisors' records")
    first = [json.loads(r.read_text())["pid"] for r in records]
    for pid in first:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in first), "both supervisors to die")

    project.ar("status", env=env, check=True)
    wait_for(lambda: all(json.loads(r.read_text() or "{}").get("pid") not in (None, *first) for r in records), "two new supervisors")
    second = {json.loads(r.read_text())["pid"] for r in records}
    assert len(second) == 2  # one each, not one for both (nor two for one)
    gate.touch()
    reported = [project.ar("wait", "--any", "--wait", "120", env=env, timeout=180).stdout.splitlines()[0] for _ in range(2)]
    assert sorted(reported) == ["launched r0001: gated", "launched r0002: gated"]
    assert sorted(row[0] for row in project.rows()) == ["r0001", "r0002"]  # exactly one row each


def test_doctor_asks_the_cluster_and_names_a_missing_partition(tmp_path: Path, slurm_cluster) -> None:
    project, env = slurm_project(tmp_path, slurm_cluster)
    line = next(x for x in project.ar("doctor", env=env, timeout=120).stdout.splitlines() if " slurm:" in x)
    assert line == f"ok slurm: sinfo answers: partition {slurm_cluster.partition} up", line
    project.ar("session", "--partition", "nope", env=env, check=True)
    line = next(x for x in project.ar("doctor", env=env, timeout=120).stdout.splitlines() if " slurm:" in x)
    assert line.startswith("FAIL slurm: partition 'nope' does not exist (there are: debug)"), line
