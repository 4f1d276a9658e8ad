"""Process helpers shared by the tests: waiting, liveness, a process SIGKILL cannot end, and a
supervisor subprocess that runs ar.watchdog.run_watched."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
TAG = "AR_RUN_DIR"

# The supervisor: runs one Launch given as JSON in argv[1], prints the Outcome as JSON. "knobs" in the
# JSON overrides module constants of ar.watchdog, e.g. to sample less or poll nvidia-smi more often.
HELPER = """
import json, os, signal, sys, time
from pathlib import Path
from ar import watchdog
from ar.watchdog import Launch, run_watched

spec = json.loads(sys.argv[1])
if spec.get("no_pidfd"):
    del os.pidfd_open  # as on kernels or platforms without pidfd: the short-poll fallback
for name, value in spec.get("knobs", {}).items():
    assert hasattr(watchdog, name), name
    setattr(watchdog, name, value)
sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
before = [signal.getsignal(s) for s in sigs]
launch = Launch(argv=["/bin/sh", "-c", spec["command"]], cwd=Path(spec["cwd"]), env=spec["env"],
                log_path=Path(spec["log"]), seconds=spec["seconds"], grace=spec["grace"],
                tag=(spec["tag_name"], spec["tag_value"]))
spawned = []
started = time.perf_counter()
outcome = run_watched(launch, on_spawn=spawned.append)
result = outcome._asdict()
result["elapsed"] = time.perf_counter() - started  # the whole call, kill and clean-up included
result["spawned"] = spawned
result["handlers_restored"] = [signal.getsignal(s) for s in sigs] == before
print(json.dumps(result), flush=True)
"""


def write_script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def spec(tmp_path: Path, command: str, seconds: float = 10.0, grace: float = 1.0,
         extra_env: dict[str, str] | None = None) -> dict:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), TAG: str(run_dir), **(extra_env or {})}
    return {"command": command, "cwd": str(tmp_path), "env": env, "log": str(tmp_path / "run.log"),
            "seconds": seconds, "grace": grace, "tag_name": TAG, "tag_value": str(run_dir)}


def start_supervisor(tmp_path: Path, launch: dict, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """env: added to the supervisor's own environment (the run's is launch["env"])."""
    helper = write_script(tmp_path, "helper.py", HELPER)
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([PY, str(helper), json.dumps(launch)], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)


def finish(supervisor: subprocess.Popen[str]) -> dict:
    stdout, _ = supervisor.communicate(timeout=30)
    assert supervisor.returncode == 0, stdout
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["handlers_restored"]
    assert len(result["spawned"]) == 1
    return result


def supervise(tmp_path: Path, launch: dict, env: dict[str, str] | None = None) -> dict:
    return finish(start_supervisor(tmp_path, launch, env))


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Fail the test, naming what never happened, when predicate stays false for timeout seconds."""
    assert wait_until(predicate, timeout), f"timed out waiting for {what}"


def gone(pid: int) -> bool:
    """No such process, or only a zombie of it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_all_gone(pids: list[int], timeout: float = 3.0) -> None:
    # A process just released from the kernel needs a moment to die; a zombie counts as gone.
    assert pids
    assert wait_until(lambda: all(gone(p) for p in pids), timeout), [p for p in pids if not gone(p)]


# Minimal FUSE server over the raw /dev/fuse protocol: mounts argv[1], answers FUSE_INIT, then reads
# every request and never answers it. A process whose request has been read waits in the kernel in
# uninterruptible sleep (D state), which SIGKILL cannot end until the connection goes away.
FUSE_SERVER = """
import ctypes, os, struct, sys
fd = os.open("/dev/fuse", os.O_RDWR)
libc = ctypes.CDLL(None, use_errno=True)
opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
if libc.mount(b"ar-test", sys.argv[1].encode(), b"fuse", 0, opts) != 0:
    print("mount failed:", os.strerror(ctypes.get_errno()), flush=True)
    sys.exit(1)
print("mounted", flush=True)
held = []
while True:
    request = os.read(fd, 1 << 20)
    _, opcode, unique = struct.unpack_from("<IIQ", request)
    if opcode == 26:  # FUSE_INIT: reply as protocol 7.31 with max_write 4096
        body = struct.pack("<IIIIHHIIHHII24x", 7, 31, 0, 0, 0, 0, 4096, 1, 0, 0, 0, 0)
        os.write(fd, struct.pack("<IiQ", 16 + len(body), 0, unique) + body)
    else:
        held.append(unique)
"""


class HungMount:
    """A FUSE mount whose server never answers; release() kills the server, which aborts the
    connection and lets every process stuck on the mount die."""

    def __init__(self, path: Path, server: subprocess.Popen):
        self.path = path
        self.server = server

    def release(self) -> None:
        if self.server.poll() is None:
            self.server.kill()
            self.server.wait()
        ctypes.CDLL(None, use_errno=True).umount2(str(self.path).encode(), 2)  # MNT_DETACH


@contextmanager
def hung_mount(tmp_path: Path) -> Iterator[HungMount]:
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse to mount a FUSE file system")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    script = tmp_path / "fuse_server.py"
    script.write_text(FUSE_SERVER)
    mount = HungMount(mountpoint, subprocess.Popen([sys.executable, str(script), str(mountpoint)], stdout=subprocess.PIPE, text=True))
    try:
        line = mount.server.stdout.readline().strip()
        if line != "mounted":
            pytest.skip(f"cannot mount FUSE here: {line or 'server exited'}")
        yield mount
    finally:
        mount.release()
