"""Run one training command as a process tree under a time limit, and leave no process of it alive.

Used by the detached supervisor process that owns a run. The run's processes are found three ways,
because each one alone misses some: the session of the main child (torchrun-style workers call
setsid), the supervisor's descendants (orphans come back to it as a subreaper), and an environment
tag (orphans re-parented outside the supervisor, e.g. under a nested subreaper or init).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from contextlib import suppress
from pathlib import Path
from typing import Callable, NamedTuple

_PR_SET_CHILD_SUBREAPER = 36
_POLL_SECONDS = 0.01  # exit-detection tick without pidfd; also the tick while waiting for a tree to die
_KILL_WAIT_SECONDS = 3.0  # after SIGKILL; longer only helps processes stuck in the kernel
_SWEEP_GRACE_MAX = 5.0
_INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Launch(NamedTuple):
    argv: list[str]  # the program and its arguments (a shell command is ["/bin/sh", "-c", text])
    cwd: Path
    env: dict[str, str]  # the child's full environment
    log_path: Path  # stdout+stderr of the whole tree, appended
    seconds: float  # time limit from spawn
    grace: float  # seconds between SIGTERM and SIGKILL
    tag: tuple[str, str]  # (name, value) present in env; marks this run's processes


class Outcome(NamedTuple):
    status: str  # "ok" | "crash" | "timeout" | "interrupted" | "unclean"
    exit_code: int | None  # Popen.returncode (negative = signal); None if unknown
    wall_seconds: float  # spawn -> main child exit, or -> kill at the deadline / interrupt
    survivors: list[int]  # pids alive after SIGKILL; non-empty iff status is "unclean"
    swept: int  # leftover processes killed after the main child ended


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process instead of init."""
    import ctypes  # ~4 ms; imported here so it overlaps the child's start-up

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return prctl(ctypes.c_int(_PR_SET_CHILD_SUBREAPER), ctypes.c_ulong(1), ctypes.c_ulong(0),
                 ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0


def tagged_pids(tag: tuple[str, str]) -> list[int]:
    """Pids (other than ours) whose initial environment holds exactly NAME=VALUE."""
    entry = _tag_entry(tag)
    me = os.getpid()
    return [pid for pid in _proc_pids() if pid != me and _has_entry(pid, entry)]


def still_alive(pids: list[int]) -> list[int]:
    """The pids that exist and are not zombies."""
    return [pid for pid in pids if (stat := _stat(pid)) is not None and not stat[2]]


def end_tagged(tag: tuple[str, str], grace: float) -> list[int]:
    """Kill every process carrying the tag: what is left of a run whose supervisor died.
    Returns the pids that survived SIGKILL."""
    survivors, _ = _Tree(None, _tag_entry(tag)).kill(grace)
    return survivors


def run_watched(launch: Launch, on_spawn: Callable[[int], None] | None = None) -> Outcome:
    """Run launch.argv to completion, the deadline, or an interrupt; then kill whatever is left.

    Must be called from the main thread: it installs SIGINT/SIGTERM/SIGHUP handlers for its duration.
    """
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    stop: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in _INTERRUPTS}
    previous_wake = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    try:
        with open(launch.log_path, "ab") as log:
            start = time.monotonic()
            child = subprocess.Popen(
                launch.argv, cwd=launch.cwd, env=launch.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        tree = _Tree(child, _tag_entry(launch.tag))
        try:
            # After the spawn, so it overlaps the child's start-up; an orphan made before it is
            # still found by its environment tag.
            become_subreaper()
            if on_spawn is not None:
                on_spawn(child.pid)
            reason = _wait_child(child, start + launch.seconds, wake_r, stop)
        except BaseException:
            tree.kill(launch.grace)
            raise
        wall = time.monotonic() - start
        swept = 0
        if reason is None:
            status = "ok" if child.returncode == 0 else "crash"
            survivors, swept = tree.kill(min(launch.grace, _SWEEP_GRACE_MAX))
        else:
            status = reason
            survivors, _ = tree.kill(launch.grace)
        return Outcome(status="unclean" if survivors else status, exit_code=child.poll(),
                       wall_seconds=wall, survivors=survivors, swept=swept)
    finally:
        signal.set_wakeup_fd(previous_wake)
        for sig, handler in previous.items():
            # None means a handler installed outside Python, which cannot be put back.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        os.close(wake_r)
        os.close(wake_w)


def _wait_child(child: subprocess.Popen[bytes], deadline: float, wake_r: int, stop: list[int]) -> str | None:
    """None once the main child has exited; else "timeout" or "interrupted"."""
    try:
        pidfd: int | None = os.pidfd_open(child.pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while child.poll() is None:
            if stop:
                return "interrupted"
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            if pidfd is None:
                select.select([wake_r], [], [], min(left, _POLL_SECONDS))
            else:
                select.select([pidfd, wake_r], [], [], left)
            _drain(wake_r)
        return None
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _drain(fd: int) -> None:
    with suppress(BlockingIOError):
        while os.read(fd, 512):
            pass


class _Tree:
    """The live processes of one run, re-collected from /proc on every look."""

    def __init__(self, child: subprocess.Popen[bytes] | None, tag_entry: bytes) -> None:
        self.child = child  # None: an abandoned run, found by its tag alone
        self.sid = child.pid if child else None  # start_new_session: the child leads its own session and group
        self.tag_entry = tag_entry
        self.session_exists = child is not None

    def kill(self, grace: float) -> tuple[list[int], int]:
        """SIGTERM, wait up to grace, SIGKILL, wait briefly. Returns (survivors, processes signalled)."""
        signalled: set[int] = set()
        if not self._wait_gone(signal.SIGTERM, grace, signalled):
            return [], len(signalled)
        alive = self._wait_gone(signal.SIGKILL, _KILL_WAIT_SECONDS, signalled)
        return sorted(alive), len(signalled)

    def _wait_gone(self, sig: int, timeout: float, signalled: set[int]) -> set[int]:
        """Send sig to every process of the run, including ones that appear meanwhile, until all
        are gone or timeout passes. Returns those still alive."""
        deadline = time.monotonic() + timeout
        sent: set[int] = set()
        while True:
            alive = self._alive()
            if fresh := alive - sent:
                self._send(sig, fresh)
                sent |= fresh
            if not alive or time.monotonic() >= deadline:
                signalled |= sent
                return alive
            time.sleep(_POLL_SECONDS)

    def _send(self, sig: int, pids: set[int]) -> None:
        # killpg also reaches group members forked since the scan. Only while the session has
        # members, because only then can its id not have been reused by an unrelated group.
        if self.session_exists and self.sid not in (os.getpgrp(), os.getsid(0)):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.sid, sig)
        for pid in pids:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _alive(self) -> set[int]:
        """Live processes of the run. Zombies count as dead; orphaned ones we inherited get reaped."""
        me = os.getpid()
        own_sid = os.getsid(0)
        table = {pid: stat for pid in _proc_pids() if (stat := _stat(pid)) is not None}
        ancestors: set[int] = set()
        pid = me
        while pid in table and pid not in ancestors:
            ancestors.add(pid)
            pid = table[pid][0]
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        found = {pid for pid, (_, sid, _) in table.items() if sid == self.sid}
        self.session_exists = bool(found)
        descendants: set[int] = set()
        todo = list(children.get(me, ())) if self.child else []
        while todo:
            pid = todo.pop()
            if pid not in descendants:  # a racy snapshot could hold a cycle
                descendants.add(pid)
                todo.extend(children.get(pid, ()))
        found |= descendants
        found.update(pid for pid in table if pid not in found and _has_entry(pid, self.tag_entry))
        alive: set[int] = set()
        for pid in found:
            ppid, sid, zombie = table[pid]
            # Never the supervisor, its ancestors or its session (run processes cannot be in it).
            if pid in ancestors or sid == own_sid:
                continue
            if self.child and pid == self.child.pid:
                if self.child.poll() is None:
                    alive.add(pid)
            elif not zombie:
                alive.add(pid)
            elif ppid == me:
                with suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
        return alive


def _tag_entry(tag: tuple[str, str]) -> bytes:
    name, value = tag
    return os.fsencode(f"{name}={value}")


def _proc_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _stat(pid: int) -> tuple[int, int, bool] | None:
    """(ppid, session id, is zombie) from /proc/PID/stat; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses; the fields after the last ")" are fixed.
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[1]), int(fields[3]), fields[0] == b"Z"


def _has_entry(pid: int, entry: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return entry in data.split(b"\0")
