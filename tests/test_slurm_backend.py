"""The Slurm backend against a real single-node cluster: results, ar's clock, re-attach, interrupts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest

from ar.backends import slurm
from processes import PY, REPO, wait_until

POLL = 0.2

# Runs in a fresh process: "submit" submits the spec in argv[2] (JSON), prints the job id, and
# watches it; "watch" watches the job id in argv[3]. Prints the Outcome as JSON.
WORKER = """
import json, sys
from pathlib import Path
from ar.backends import slurm
mode, fields = sys.argv[1], json.loads(sys.argv[2])
spec = slurm.JobSpec(**fields)._replace(cwd=Path(fields["cwd"]), log_path=Path(fields["log_path"]), run_dir=Path(fields["run_dir"]))
job_id = slurm.submit(spec) if mode == "submit" else sys.argv[3]
print(job_id, flush=True)
print(json.dumps(slurm.watch(spec, job_id, poll_seconds=0.2)._asdict()), flush=True)
"""


@pytest.fixture(autouse=True)
def slurm_env(slurm_cluster, monkeypatch):  # noqa: F811
    for name, value in slurm_cluster.env.items():
        monkeypatch.setenv(name, value)  # for the calls that use this process's environment


def make_spec(cluster, tmp_path: Path, command: str, seconds: int = 60, grace: int = 2, name: str = "r 1",
              sbatch_args: list[str] | None = None) -> slurm.JobSpec:
    run_dir = tmp_path / "runs" / name  # a space in the paths: everything must be quoted
    run_dir.mkdir(parents=True)
    env = {**os.environ, **cluster.env, "AR_RUN_ID": name, "AR_SECONDS": str(seconds)}
    return slurm.JobSpec(command=command, cwd=tmp_path, env=env, log_path=run_dir / "run.log", run_dir=run_dir,
                         seconds=seconds, grace=grace, job_name=f"ar-test-{name}", partition=cluster.partition,
                         sbatch_args=sbatch_args or [])


def start_worker(spec: slurm.JobSpec, mode: str = "submit", job_id: str = "") -> subprocess.Popen[str]:
    fields = {**spec._asdict(), "cwd": str(spec.cwd), "log_path": str(spec.log_path), "run_dir": str(spec.run_dir)}
    return subprocess.Popen([PY, "-c", WORKER, mode, json.dumps(fields), job_id], cwd=REPO, env={**spec.env, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, text=True)


def finish_worker(worker: subprocess.Popen[str]) -> dict:
    stdout, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, stdout
    return json.loads(stdout.splitlines()[-1])


def started(spec: slurm.JobSpec) -> float:
    marker = spec.run_dir / slurm.START_MARKER
    assert wait_until(marker.exists, timeout=20), "the job did not start"
    return float(marker.read_text())


def sleeper(mark: str, ignore_term: bool = False) -> str:
    """A shell word list: a python that sleeps for ten minutes, with mark in its command line."""
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignore_term else ""
    return f"python3 -c 'import signal, time; {ignore}time.sleep(600)' {mark}"


def live_processes_with(text: str) -> list[int]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] != psutil.STATUS_ZOMBIE and text in " ".join(process.info["cmdline"] or ()):
            found.append(process.pid)
    return found


def test_ok_and_crash_report_the_commands_exit_and_log(slurm_cluster, tmp_path):
    ok = make_spec(slurm_cluster, tmp_path, 'echo "val_loss=0.5"; echo "run=$AR_RUN_ID deadline=$AR_DEADLINE"; pwd')
    left = f"ar-mark-{uuid.uuid4().hex}"
    crash = make_spec(slurm_cluster, tmp_path, f"{sleeper(left)} & echo failing; exit 3", name="r2")
    ok_id, crash_id = slurm.submit(ok), slurm.submit(crash)

    handlers = [signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
    outcome = slurm.watch(ok, ok_id, poll_seconds=POLL)
    assert (outcome.status, outcome.exit_code, outcome.survivors, outcome.swept) == ("ok", 0, [], 0)
    assert [signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)] == handlers
    assert 0 <= outcome.wall_seconds < 30
    lines = ok.log_path.read_text().splitlines()
    start = float((ok.run_dir / slurm.START_MARKER).read_text())
    assert "val_loss=0.5" in lines
    assert f"run=r 1 deadline={int(start) + ok.seconds}" in lines  # the env passed; the deadline from the start
    assert str(tmp_path) in lines  # ran in cwd
    (ok.run_dir / slurm.EXIT_MARKER).unlink()  # not visible yet, as on NFS: Slurm's record stands in
    assert slurm.watch(ok, ok_id, poll_seconds=POLL)[:2] == ("ok", 0)

    outcome = slurm.watch(crash, crash_id, poll_seconds=POLL)
    assert (outcome.status, outcome.exit_code) == ("crash", 3)
    assert "failing" in crash.log_path.read_text()
    assert not live_processes_with(left)  # what the command left behind was ended with it
    assert slurm.alive(ok_id) is False


def test_deadline_kills_a_job_that_ignores_sigterm(slurm_cluster, tmp_path):
    mark = f"ar-mark-{uuid.uuid4().hex}"
    # A child in a new session and a grandchild, both deaf to SIGTERM: proctrack/linuxproc alone
    # loses the grandchild once its parent dies, and the process group misses the first.
    command = f"setsid {sleeper(mark, ignore_term=True)} & {sleeper(mark, ignore_term=True)}; echo never"
    spec = make_spec(slurm_cluster, tmp_path, command, seconds=3, grace=2)
    job_id = slurm.submit(spec)
    outcome = slurm.watch(spec, job_id, poll_seconds=POLL)
    assert outcome.status == "timeout"
    assert 3 <= outcome.wall_seconds < 20
    assert slurm.alive(job_id) is False
    assert wait_until(lambda: not live_processes_with(mark), timeout=5), live_processes_with(mark)


def test_a_fresh_watcher_judges_jobs_of_a_killed_one(slurm_cluster, tmp_path):
    finished = make_spec(slurm_cluster, tmp_path, "sleep 1; exit 4", name="finished")
    overdue = make_spec(slurm_cluster, tmp_path, "sleep 600", seconds=6, grace=1, name="overdue")
    first = start_worker(finished)
    finished_id = first.stdout.readline().strip()
    overdue_id = slurm.submit(overdue)
    started(finished)
    first.kill()  # the watcher dies while the job runs on
    first.wait()

    start = started(overdue)
    assert wait_until(lambda: slurm.alive(finished_id) is False, timeout=20)
    # Past the overdue job's deadline, counted from its start: a new watcher ends it at once.
    time.sleep(max(0.0, start + overdue.seconds + 1 - time.time()))
    began = time.monotonic()
    late = finish_worker(start_worker(overdue, "watch", overdue_id))
    assert late["status"] == "timeout"
    assert time.monotonic() - began < overdue.seconds  # not a new limit from the watch's own start
    assert slurm.alive(overdue_id) is False

    again = finish_worker(start_worker(finished, "watch", finished_id))
    assert (again["status"], again["exit_code"]) == ("crash", 4)
    assert 1 <= again["wall_seconds"] < 20


def test_sigterm_to_the_watcher_cancels_the_job(slurm_cluster, tmp_path):
    spec = make_spec(slurm_cluster, tmp_path, "sleep 600")
    worker = start_worker(spec)
    job_id = worker.stdout.readline().strip()
    started(spec)
    worker.send_signal(signal.SIGTERM)
    outcome = finish_worker(worker)
    assert outcome["status"] == "interrupted"
    assert slurm.alive(job_id) is False


def test_queue_time_does_not_count(slurm_cluster, tmp_path):
    filler = make_spec(slurm_cluster, tmp_path, "sleep 5", name="filler", sbatch_args=[f"--cpus-per-task={slurm_cluster.cpus}"])
    filler_id = slurm.submit(filler)
    started(filler)  # the node is full now
    queued = make_spec(slurm_cluster, tmp_path, "sleep 1", seconds=3, name="queued")
    dropped = make_spec(slurm_cluster, tmp_path, "sleep 600", name="dropped")
    submitted = time.time()
    queued_id, dropped_id = slurm.submit(queued), slurm.submit(dropped)

    began = time.monotonic()
    slurm.cancel(dropped_id, grace=30)  # pending: removed at once, no wait for it to start
    assert time.monotonic() - began < 15
    assert slurm.alive(dropped_id) is False
    assert slurm.watch(dropped, dropped_id)[:3] == ("crash", None, 0.0)  # it never ran

    outcome = slurm.watch(queued, queued_id, poll_seconds=POLL)
    assert (outcome.status, outcome.exit_code) == ("ok", 0)
    assert float((queued.run_dir / slurm.START_MARKER).read_text()) > submitted + queued.seconds  # it did wait
    assert slurm.alive(filler_id) is False


def test_submit_failure_names_sbatch_error(slurm_cluster, tmp_path):
    spec = make_spec(slurm_cluster, tmp_path, "true")._replace(partition="no-such-partition")
    with pytest.raises(slurm.SlurmError, match="sbatch failed: .*[Ii]nvalid partition"):
        slurm.submit(spec)


def test_alive_is_unknown_when_slurm_cannot_be_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm, "_QUERY_SECONDS", 1.0)
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "missing.conf"))  # squeue hangs looking for a controller
    assert slurm.alive("1") is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue at all
    assert slurm.alive("1") is None
