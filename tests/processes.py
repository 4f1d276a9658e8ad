"""Process helpers shared by the tests: waiting, liveness, and a process SIGKILL cannot end."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


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
