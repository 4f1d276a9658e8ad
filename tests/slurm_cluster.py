"""A real single-node Slurm cluster for the tests: munged, slurmctld and slurmd on this machine.

Needs root and Debian's slurm-wlm and munge (.ci/run installs them). Without them the tests that
use it are skipped, except under CI, where that is a failure. No accounting (no slurmdbd): sacct
answers "accounting storage is disabled".

Its munged is its own, with its own key and socket (slurm.conf's AuthInfo), so that nothing of the
machine's is changed and two test sessions at once do not stop each other's.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The node is declared with more CPUs than this machine has (slurmd keeps the declared count
# under SlurmdParameters=config_overrides), so that several one-CPU test jobs run at once.
NODE_CPUS = max(8, os.cpu_count() or 1)
READY_SECONDS = 30.0
STOP_SECONDS = 10.0
_BINARIES = ("mungekey", "munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


@dataclass
class SlurmCluster:
    dir: Path  # slurm.conf, state, spool, pid and log files
    host: str  # the one node's name (this machine's short hostname)
    partition: str
    cpus: int  # as declared for the node
    env: dict[str, str] = field(default_factory=dict)  # what a client needs on top of os.environ

    @property
    def conf(self) -> Path:
        return self.dir / "slurm.conf"

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.dir / name
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(no log)"]
            parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts)

    def client(self, *argv: str, timeout: float = 15) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A running cluster for the whole test session (registered in conftest.py)."""
    _require_slurm()
    with running_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@contextmanager
def running_cluster(workdir: Path):
    """Start the cluster's daemons with their files in workdir; stop them on exit (the fixture's,
    and bench/bench_slots.py's)."""
    cluster = SlurmCluster(dir=workdir, host=socket.gethostname().split(".")[0], partition="debug", cpus=NODE_CPUS)
    cluster.env = {"SLURM_CONF": str(cluster.conf)}
    # munged (user munge) must reach its socket's folder; pytest's temporary folders are root's alone.
    munge_dir = Path(tempfile.mkdtemp(prefix="ar-munge-"))
    munged = None
    try:
        munged = _start_munged(munge_dir)
        _write_conf(cluster, munge_dir / "munge.socket")
        for daemon in ("slurmctld", "slurmd"):
            done = subprocess.run([daemon, "-f", str(cluster.conf)], capture_output=True, text=True, timeout=30)
            if done.returncode != 0:
                raise RuntimeError(f"{daemon} did not start: {done.stderr.strip()}\n{cluster.log_tails()}")
        _wait_idle(cluster)
        yield cluster
    finally:
        _stop(cluster)
        if munged is not None:
            _stop_pid(munged)
        shutil.rmtree(munge_dir, ignore_errors=True)


def _require_slurm() -> None:
    missing = [name for name in _BINARIES if shutil.which(name) is None]
    reason = (f"Slurm binaries missing: {', '.join(missing)} (apt-get install slurm-wlm munge)" if missing
              else "a Slurm cluster needs root" if os.geteuid() != 0 else None)
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must test the Slurm backend: {reason}")
    if reason:
        pytest.skip(reason)


def _start_munged(folder: Path) -> int:
    """Start a munged of this cluster's own in folder; its pid."""
    key = folder / "munge.key"
    subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True, timeout=30)
    folder.chmod(0o755)  # munged requires everyone's execute permission on its socket's folder
    for path in (folder, key):
        shutil.chown(path, "munge", "munge")
    done = subprocess.run(["munged", f"--key-file={key}", f"--socket={folder / 'munge.socket'}",
                           f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
                           f"--seed-file={folder / 'munged.seed'}"],
                          user="munge", group="munge", capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"munged did not start: {done.stderr.strip()}")
    return int((folder / "munged.pid").read_text())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _write_conf(cluster: SlurmCluster, munge_socket: Path) -> None:
    d = cluster.dir
    (d / "state").mkdir()
    (d / "spool").mkdir()
    cluster.conf.write_text(f"""\
# Unique: the batch script tells its processes from another cluster's job of the same id by it
ClusterName=ar{os.getpid()}
SlurmctldHost={cluster.host}
SlurmUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
# Cores only: with memory consumable too, every job would take the whole node's memory.
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ReturnToService=2
# SIGTERM to SIGKILL when Slurm itself ends a job (30 s by default)
KillWait=5
# finished jobs stay in scontrol's answers for 10 minutes
MinJobAge=600
SchedulerParameters=sched_interval=1
NodeName={cluster.host} CPUs={cluster.cpus} RealMemory=1024 State=UNKNOWN
PartitionName={cluster.partition} Nodes={cluster.host} Default=YES MaxTime=INFINITE State=UP
""")


def _wait_idle(cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + READY_SECONDS
    last = ""
    while time.monotonic() < deadline:
        try:
            done = cluster.client("sinfo", "-h", "-n", cluster.host, "-o", "%T")
            last = (done.stdout + done.stderr).strip()
        except subprocess.TimeoutExpired:
            last = "sinfo timed out"
        if last == "idle":
            return
        time.sleep(0.2)
    raise RuntimeError(f"the Slurm node was not idle within {READY_SECONDS:.0f} s (sinfo: {last!r})\n{cluster.log_tails()}")


def _stop(cluster: SlurmCluster) -> None:
    """Cancel every job, then stop both daemons by their pid files, then the job steps they left."""
    if (cluster.dir / "slurmctld.pid").exists():
        try:
            cluster.client("scancel", f"--partition={cluster.partition}")
            deadline = time.monotonic() + STOP_SECONDS
            while time.monotonic() < deadline and cluster.client("squeue", "-h", "-o", "%i").stdout.strip():
                time.sleep(0.2)
        except subprocess.TimeoutExpired:
            pass
    for name in ("slurmd.pid", "slurmctld.pid"):
        path = cluster.dir / name
        if path.exists():
            _stop_pid(int(path.read_text()))
    # A slurmstepd that cannot reach slurmd retries forever and ignores SIGTERM; ours still hold
    # this cluster's slurmd.log open.
    log = str(cluster.dir / "slurmd.log")
    for pid in _pids_with_open(log):
        _signal(pid, signal.SIGKILL)


def _stop_pid(pid: int) -> None:
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.1)
    if _running(pid):
        _signal(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Alive and not a zombie (the daemons are not our children; this machine's init may never reap them)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _pids_with_open(path: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == path for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids
