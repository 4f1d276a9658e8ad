"""The process that owns a run, and the caller that follows it (SPEC §5.6).

`ar run` forks twice: the grandchild (the supervisor) starts its own session, inherits the
iteration lock and outlives the caller, so an agent shell that kills `ar run` at its time
limit kills only the caller. The two talk over a pipe: the caller prints what arrives.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
import traceback
from pathlib import Path

from ar import lines
from ar.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_RUNNING, as_typed
from ar.lock import IterationLock


class Channel:
    """One end of the caller <-> supervisor pipe. Messages: 'P pid', 'L line', 'X exit code'."""

    def __init__(self, fd: int, is_caller: bool):
        self.fd = fd
        self.is_caller = is_caller

    # supervisor side
    def send(self, kind: str, text: str) -> None:
        try:
            os.write(self.fd, f"{kind} {text}\n".encode())
        except OSError:
            pass  # the caller is gone (killed by its shell): the run goes on regardless

    def line(self, text: str) -> None:
        self.send("L", text)

    # caller side
    def follow(self, run_id: str, wait: float | None) -> int:
        """Print the supervisor's lines until it finishes, `wait` seconds pass, or Ctrl+C."""
        deadline = None if wait is None else time.monotonic() + wait
        pending = b""
        supervisor_pid = None
        interrupted = False
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ready, _, _ = select.select([self.fd], [], [], timeout)
                if not ready:
                    print(lines.still_running(run_id), flush=True)
                    return EXIT_RUNNING
                chunk = os.read(self.fd, 65536)
            except KeyboardInterrupt:
                if interrupted or supervisor_pid is None:
                    return EXIT_INTERRUPTED  # second Ctrl+C: leave; the supervisor still records the run
                interrupted = True
                os.kill(supervisor_pid, signal.SIGTERM)
                continue
            if not chunk:
                print(as_typed(f"ar: the process running {run_id} ended without a verdict; `ar status` repairs it"), flush=True)
                return EXIT_ERROR
            pending += chunk
            *messages, pending = pending.split(b"\n")
            for raw in messages:
                kind, _, text = raw.decode(errors="replace").partition(" ")
                if kind == "P":
                    supervisor_pid = int(text)
                elif kind == "L":
                    print(text, flush=True)
                elif kind == "X":
                    return int(text)


def detach(lock: IterationLock, log_path: Path) -> Channel:
    """Fork the supervisor. Returns in both processes: the caller gets is_caller=True."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    middle = os.fork()
    if middle:
        os.close(write_fd)
        lock.close()  # the supervisor's inherited copy keeps the lock held
        os.waitpid(middle, 0)
        return Channel(read_fd, is_caller=True)
    try:
        os.close(read_fd)
        os.setsid()  # out of the caller's session: its terminal's Ctrl+C and its shell's kill do not reach us
        if os.fork():
            os._exit(0)  # the supervisor is re-parented away from the caller's process tree
        _close_inherited(keep={write_fd, lock.fd})
    except BaseException:
        os._exit(EXIT_ERROR)
    _become_supervisor(log_path)
    channel = Channel(write_fd, is_caller=False)
    channel.send("P", str(os.getpid()))
    return channel


def _close_inherited(keep: set[int]) -> None:
    """Every descriptor but the pipe and the slot's lock: another slot's lock, or the books lock,
    held by the caller would otherwise stay held for as long as this supervisor lives."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the directory listing's own descriptor, already closed


def _become_supervisor(log_path: Path) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    for fd in (devnull, log):
        os.close(fd)
    sys.stdin = open(os.devnull)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the watchdog installs its own handlers


def run_supervised(body, channel: Channel) -> None:
    """Run the supervisor's part and exit the process; it never returns into the CLI."""
    code = EXIT_ERROR
    try:
        code = body()
    except BaseException:
        traceback.print_exc()  # into .ar-supervisor.log; the next command's repair records the run
    finally:
        channel.send("X", str(code))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
