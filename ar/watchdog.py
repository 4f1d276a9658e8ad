"""Run one training command as a process tree under a time limit, and leave no process of it alive.

Used by the detached supervisor process that owns a run. The run's processes are found three ways,
because each one alone misses some: the session of the main child (torchrun-style workers call
setsid), the supervisor's descendants (orphans come back to it as a subreaper), and an environment
tag (orphans re-parented outside the supervisor, e.g. under a nested subreaper or init).

While the run goes on, the memory of that same process set is sampled for the run's resource
limits: the summed RSS from /proc, and GPU memory from nvidia-smi in a background thread.
"""

from __future__ import annotations

import math
import os
import resource
import select
import signal
import subprocess
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Callable, NamedTuple

_PR_SET_CHILD_SUBREAPER = 36
_POLL_SECONDS = 0.01  # exit-detection tick without pidfd; also the tick while waiting for a tree to die
_KILL_WAIT_SECONDS = 3.0  # after SIGKILL; longer only helps processes stuck in the kernel
_SWEEP_GRACE_MAX = 5.0
_INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_SAMPLE_SECONDS = 0.2  # RSS sampling interval while the main child runs
_SAMPLE_COST_RATIO = 20  # ...or 20 times a sample's cost, so sampling takes at most ~5% of a CPU
_GPU_SECONDS = 2.0  # between nvidia-smi queries
_GPU_QUERY_SECONDS = 30.0  # an nvidia-smi that takes longer is killed; a wedged driver can hang it
_GPU_QUERY = ("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_MIB = 1 << 20
_RUNNING = object()  # the GPU poll has not been stopped yet


class Launch(NamedTuple):
    argv: list[str]  # the program and its arguments (a shell command is ["/bin/sh", "-c", text])
    cwd: Path
    env: dict[str, str]  # the child's full environment
    log_path: Path  # stdout+stderr of the whole tree, appended
    seconds: float  # time limit from spawn
    grace: float  # seconds between SIGTERM and SIGKILL
    tag: tuple[str, str]  # (name, value) present in env; marks this run's processes
    # Appended with "pid start" of each process of the run as it is first seen, so that whoever
    # cleans up after a supervisor that was killed can find processes the tag misses.
    process_log: Path | None = None


class Outcome(NamedTuple):
    status: str  # "ok" | "crash" | "timeout" | "interrupted" | "unclean"
    exit_code: int | None  # Popen.returncode (negative = signal); None if unknown
    wall_seconds: float  # spawn -> main child exit, or -> kill at the deadline / interrupt
    survivors: list[int]  # pids alive after SIGKILL; non-empty iff status is "unclean"
    swept: int  # leftover processes killed after the main child ended
    # Highest sum of RSS over the run's live processes seen at once, MiB (a page shared by several
    # processes counts in each); at least the peak of the largest single process reaped in the run.
    peak_rss_mb: float = 0.0
    # Highest summed GPU memory of the run's processes per nvidia-smi, MiB; None without a working
    # nvidia-smi. Polled every _GPU_SECONDS, so a shorter spike can be missed.
    peak_gpu_mb: float | None = None


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process instead of init."""
    import ctypes  # ~1.5 ms, paid only by the supervisor (before the spawn: orphans must come back)

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


def end_abandoned(tag: tuple[str, str], process_log: Path | None, grace: float) -> list[int]:
    """Kill what is left of a run whose supervisor died: every process carrying the tag, every
    process its supervisor recorded (same pid and start time), and their descendants.
    Returns the pids that survived SIGKILL."""
    survivors, _ = _Tree(None, _tag_entry(tag), recorded=read_process_log(process_log)).kill(grace)
    return survivors


def read_process_log(path: Path | None) -> set[tuple[int, int]]:
    recorded: set[tuple[int, int]] = set()
    if path is None:
        return recorded
    try:
        data = path.read_bytes()
    except OSError:
        return recorded
    for line in data.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
            recorded.add((int(fields[0]), int(fields[1])))
    return recorded


def run_watched(launch: Launch, on_spawn: Callable[[int], None] | None = None) -> Outcome:
    """Run launch.argv to completion, the deadline, or an interrupt; then kill whatever is left.

    Must be called from the main thread: it installs SIGINT/SIGTERM/SIGHUP handlers for its duration.
    """
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    stop: list[int] = []
    usage = _Usage()

    def on_signal(signum: int, _frame: object) -> None:
        stop.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in _INTERRUPTS}
    previous_wake = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    try:
        # Before the child exists: an orphan it makes in its first instant (a runner like
        # `env -i setsid -f ...`) must come back to us, not to init, where no look finds it.
        become_subreaper()
        with open(launch.log_path, "ab") as log:
            start = time.monotonic()
            child = subprocess.Popen(
                launch.argv, cwd=launch.cwd, env=launch.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        # Every look at the run's processes, the samples and the final kill's alike, measures them
        # and records the new ones.
        tree = _Tree(child, _tag_entry(launch.tag), observe=usage.observe, process_log=launch.process_log)
        try:
            usage.started(child.pid)
            if on_spawn is not None:
                on_spawn(child.pid)
            reason = _wait_child(child, start + launch.seconds, wake_r, stop,
                                 lambda: tree._alive(remember=True))
            wall = time.monotonic() - start
            usage.stop_gpu()  # its query is our child too: gone before the kill counts our children
            tree.ignored = usage.gpu_children()
            swept = 0
            if reason is None:
                status = "ok" if child.returncode == 0 else "crash"
                survivors, swept = tree.kill(min(launch.grace, _SWEEP_GRACE_MAX))
            else:
                status = reason
                survivors, _ = tree.kill(launch.grace)
        except BaseException:
            usage.stop_gpu()
            tree.kill(launch.grace)
            raise
        finally:
            tree.close()
        peak_rss, peak_gpu = usage.finish()
        return Outcome(status="unclean" if survivors else status, exit_code=child.poll(),
                       wall_seconds=wall, survivors=survivors, swept=swept,
                       peak_rss_mb=peak_rss / _MIB, peak_gpu_mb=peak_gpu)
    finally:
        usage.finish()  # stops the GPU thread however this ends
        signal.set_wakeup_fd(previous_wake)
        for sig, handler in previous.items():
            # None means a handler installed outside Python, which cannot be put back.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        os.close(wake_r)
        os.close(wake_w)


def _wait_child(child: subprocess.Popen[bytes], deadline: float, wake_r: int, stop: list[int],
                sample: Callable[[], object] | None = None) -> str | None:
    """None once the main child has exited; else "timeout" or "interrupted". Calls sample about
    every _SAMPLE_SECONDS meanwhile; the pidfd still ends the wait the moment the child exits."""
    try:
        pidfd: int | None = os.pidfd_open(child.pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        next_sample = time.monotonic() + _SAMPLE_SECONDS if sample else math.inf
        while child.poll() is None:
            if stop:
                return "interrupted"
            now = time.monotonic()
            if now >= deadline:
                return "timeout"
            if now >= next_sample:
                sample()
                done = time.monotonic()
                next_sample = done + max(_SAMPLE_SECONDS, _SAMPLE_COST_RATIO * (done - now))
                continue  # the child may have exited meanwhile
            wait = min(deadline, next_sample) - now
            if pidfd is None:
                select.select([wake_r], [], [], min(wait, _POLL_SECONDS))
            else:
                select.select([pidfd, wake_r], [], [], wait)
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

    def __init__(self, child: subprocess.Popen[bytes] | None, tag_entry: bytes,
                 observe: Callable[[set[int]], None] | None = None, process_log: Path | None = None,
                 recorded: set[tuple[int, int]] | None = None) -> None:
        self.child = child  # None: an abandoned run, found by its tag and its process log
        self.sid = child.pid if child else None  # start_new_session: the child leads its own session and group
        self.tag_entry = tag_entry
        self.session_exists = child is not None
        self.observe = observe  # called with every set _alive returns
        # (pid, start time) -> carries the tag; kept between looks made with remember=True
        self.tag_seen: dict[tuple[int, int], bool] = {}
        # (pid, start time) of processes known to be the run's: recorded by a supervisor that died,
        # or already written to process_log by this one
        self.recorded = set(recorded or ())
        self.ignored: set[int] = set()  # our children that are not the run's (set by run_watched)
        self.log_fd = None
        if process_log is not None:
            with suppress(OSError):  # a safety net: without it the run is still watched and killed
                self.log_fd = os.open(process_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if child is not None and self.log_fd is not None:
            self._record({child.pid})  # at once: a supervisor killed before the first look still left this

    def kill(self, grace: float) -> tuple[list[int], int]:
        """SIGTERM, wait up to grace, SIGKILL, wait briefly. Returns (survivors, processes signalled)."""
        signalled: set[int] = set()
        if self._wait_gone(signal.SIGTERM, grace, signalled) is None:
            return [], len(signalled)
        alive = self._wait_gone(signal.SIGKILL, _KILL_WAIT_SECONDS, signalled)
        if alive is None:
            return [], len(signalled)
        # Unseen to the end (a fork chain outrunning the scans): name what is left of our children.
        return sorted(alive or self._alive() or self._own_children()), len(signalled)

    def _wait_gone(self, sig: int, timeout: float, signalled: set[int]) -> set[int] | None:
        """Send sig to every process of the run, including ones that appear meanwhile, until all
        are gone (None) or timeout passes (those still alive, maybe none seen).

        Gone means two scans in a row found nothing and no child of ours is left. One empty scan
        proves little: /proc is listed before each process is read, so a process forked by one
        that then exits (a link of a fork chain) can fall between the two. A live child, though,
        the kernel reports exactly, and as a subreaper every orphan of the run is our child."""
        deadline = time.monotonic() + timeout
        sent: set[int] = set()
        empty = 0
        while True:
            alive = self._alive()
            if fresh := alive - sent:
                self._send(sig, fresh)
                sent |= fresh
            empty = 0 if alive or self._children_left() else empty + 1
            if empty == 2:
                signalled |= sent
                return None
            if time.monotonic() >= deadline:
                signalled |= sent
                return alive
            # scan again at once while something may hide; wait for the dying otherwise
            time.sleep(_POLL_SECONDS if alive else 0.001)

    def _children_left(self) -> bool:
        """Whether a child of ours still lives (exited ones are reaped). Only for a tree whose
        processes are our descendants; the main child is reaped through Popen, to keep its code."""
        if self.child is None:
            return False
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return False
            if info is None:
                # A live child; one in our own session is not the run's (an nvidia-smi query stuck
                # in the kernel, say). Looked up only in that case, so a fork chain cannot hide.
                return not self.ignored or bool(self._own_children())
            if info.si_pid == self.child.pid:
                self.child.wait()
            else:
                with suppress(ChildProcessError):
                    os.waitpid(info.si_pid, 0)

    def _own_children(self) -> list[int]:
        """Our live children that belong to the run (not in our session, not ignored)."""
        me, own_sid = os.getpid(), os.getsid(0)
        return [pid for pid in _proc_pids() if (stat := _stat(pid)) is not None and stat[0] == me and not stat[2]
                and stat[1] != own_sid and pid not in self.ignored]

    def _send(self, sig: int, pids: set[int]) -> None:
        # killpg also reaches group members forked since the scan. Only while the session has
        # members, because only then can its id not have been reused by an unrelated group.
        if self.session_exists and self.sid not in (os.getpgrp(), os.getsid(0)):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.sid, sig)
        for pid in pids:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _alive(self, remember: bool = False) -> set[int]:
        """Live processes of the run. Zombies count as dead; orphaned ones we inherited get reaped.

        remember: reuse the tag check of a process seen by an earlier such look instead of reading
        its environment again, which is half the cost of a look. For the samples only: a process
        that exec()s with a new environment is not noticed, so a kill always reads afresh.
        """
        me = os.getpid()
        own_sid = os.getsid(0)
        table = {pid: stat for pid in _proc_pids() if (stat := _stat(pid)) is not None}
        ancestors: set[int] = set()
        pid = me
        while pid in table and pid not in ancestors:
            ancestors.add(pid)
            pid = table[pid][0]
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        found = {pid for pid, (_, sid, _, _) in table.items() if sid == self.sid}
        self.session_exists = bool(found)
        descendants: set[int] = set()
        todo = list(children.get(me, ())) if self.child else []
        if self.child is None:  # what a dead supervisor recorded, and what those started since
            todo += [pid for pid, (_, _, _, started) in table.items() if (pid, started) in self.recorded]
        while todo:
            pid = todo.pop()
            if pid not in descendants:  # a racy snapshot could hold a cycle
                descendants.add(pid)
                todo.extend(children.get(pid, ()))
        found |= descendants
        if remember:
            seen = self.tag_seen
            self.tag_seen = {}  # only processes that still exist are kept
            for pid, (_, _, _, started) in table.items():
                if pid not in found:
                    key = (pid, started)
                    tagged = seen.get(key)
                    if tagged is None:
                        tagged = _has_entry(pid, self.tag_entry)
                    self.tag_seen[key] = tagged
                    if tagged:
                        found.add(pid)
        else:
            found.update(pid for pid in table if pid not in found and _has_entry(pid, self.tag_entry))
        alive: set[int] = set()
        for pid in found:
            ppid, sid, zombie, _ = table[pid]
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
        if self.observe is not None:
            self.observe(alive)
        if self.log_fd is not None:
            self._record(alive, table)
        return alive

    def _record(self, pids: set[int], table: dict | None = None) -> None:
        fresh = []
        for pid in pids:
            stat = table.get(pid) if table is not None else _stat(pid)
            if stat is not None and (pid, stat[3]) not in self.recorded:
                self.recorded.add((pid, stat[3]))
                fresh.append(f"{pid} {stat[3]}\n")
        if fresh:
            with suppress(OSError):  # a full disk costs only this safety net, never the run
                os.write(self.log_fd, "".join(fresh).encode())

    def close(self) -> None:
        if self.log_fd is not None:
            os.close(self.log_fd)
            self.log_fd = None


class _Usage:
    """Peak memory of one run: RSS summed over the run's processes at each look (_Tree.observe),
    and GPU memory from nvidia-smi in a background thread when the tool is on PATH."""

    def __init__(self) -> None:
        # Largest RSS of any child reaped so far, KiB; a later, larger value came from this run.
        self.maxrss_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        self.peak_rss = 0  # bytes
        self.gpu: _GpuPoll | None = None
        self.gpu_peak: object = _RUNNING
        self.result: tuple[int, float | None] | None = None

    def started(self, pid: int) -> None:
        """The sample right after the spawn. The run is then the just-exec'd child alone, so its
        statm is read directly: a full look costs a millisecond or more, which a run that exits at
        once would pay for nothing."""
        self.peak_rss = _resident(pid)
        program = _on_path("nvidia-smi")
        if program is not None:
            with suppress(OSError, RuntimeError):  # no pipe or thread to spare: no GPU figure
                self.gpu = _GpuPoll(program, frozenset((pid,)))

    def observe(self, pids: set[int]) -> None:
        rss = sum(_resident(pid) for pid in pids)
        if rss > self.peak_rss:
            self.peak_rss = rss
        if self.gpu is not None:
            self.gpu.pids = frozenset(pids)

    def gpu_children(self) -> set[int]:
        """A query the GPU thread could not end (stuck in the kernel): never counted as the run's."""
        return {self.gpu.query_pid} if self.gpu is not None and self.gpu.query_pid else set()

    def stop_gpu(self) -> None:
        """End the nvidia-smi polling (and any query in flight). Idempotent."""
        if self.gpu is not None and self.gpu_peak is _RUNNING:
            self.gpu_peak = self.gpu.stop()

    def finish(self) -> tuple[int, float | None]:
        """Stop the GPU thread; (peak RSS in bytes, peak GPU MiB or None). Idempotent."""
        if self.result is None:
            self.stop_gpu()
            peak_gpu = None if self.gpu is None else self.gpu_peak
            # A process that lived and died between two looks is seen only here: once reaped (by
            # us, or by a parent that we reaped in turn) its peak RSS is in RUSAGE_CHILDREN. Only
            # the single largest one is, so it is a floor, not a sum. nvidia-smi is reaped too;
            # its own few tens of MiB only matter to a run smaller than that.
            maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            floor = maxrss * 1024 if maxrss > self.maxrss_before else 0
            self.result = (max(self.peak_rss, floor), peak_gpu)
        return self.result


class _GpuPoll:
    """Polls nvidia-smi every _GPU_SECONDS on a daemon thread (a query takes 50-100 ms; the main
    loop never waits for one) and keeps the highest summed used_memory of the pids in `pids`,
    which the main thread replaces at each look. Any failure of the tool keeps the last value.

    The queries run in the supervisor's session, so _Tree never counts, kills or reaps them.
    nvidia-smi must report pids as this pid namespace numbers them; where it does not (some
    containers), no line matches and peak_gpu_mb stays 0.
    """

    def __init__(self, program: str, pids: frozenset[int]) -> None:
        self.program = program
        self.pids = pids
        self.peak: float | None = None
        self.query_pid: int | None = None  # the nvidia-smi running now, if any
        self.stop_r, self.stop_w = os.pipe()  # closing stop_w wakes the thread for good
        self.thread = threading.Thread(target=self._poll, name="ar-gpu-poll", daemon=True)
        self.thread.start()

    def stop(self) -> float | None:
        os.close(self.stop_w)
        # A query in flight is killed at once; the join only waits for that.
        self.thread.join(timeout=1.0)
        return self.peak

    def _poll(self) -> None:
        try:
            while True:
                used = self._query()
                if used is not None and (self.peak is None or used > self.peak):
                    self.peak = used
                if select.select([self.stop_r], [], [], _GPU_SECONDS)[0]:
                    return
        except Exception:  # never take the supervisor down over a measurement
            pass
        finally:
            os.close(self.stop_r)

    def _query(self) -> float | None:
        """MiB used by the run's processes now; None if nvidia-smi failed or was stopped."""
        pids = self.pids
        try:
            proc = subprocess.Popen((self.program, *_GPU_QUERY), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError:
            return None
        self.query_pid = proc.pid
        output = bytearray()
        try:
            out = proc.stdout.fileno()
            deadline = time.monotonic() + _GPU_QUERY_SECONDS
            while True:
                left = deadline - time.monotonic()
                ready = select.select([out, self.stop_r], [], [], left)[0] if left > 0 else []
                if not ready or self.stop_r in ready:
                    return None  # too slow, or the run is over
                chunk = os.read(out, 65536)
                if not chunk:
                    break
                output += chunk
            if proc.wait(timeout=max(deadline - time.monotonic(), 0.01)) != 0:
                return None
        except (OSError, subprocess.TimeoutExpired):
            return None
        finally:
            if proc.returncode is None:
                proc.kill()  # only this thread reaps it, so the pid cannot have been reused
                proc.wait()
            self.query_pid = None
            proc.stdout.close()
        return _gpu_used(bytes(output), pids | self.pids)


def _gpu_used(output: bytes, pids: frozenset[int]) -> float | None:
    """Sum of used_memory over the CSV lines "pid, used_memory" of pids; a process can have one
    line per GPU. None when a line of ours has no number (e.g. "[N/A]"): unknown this time."""
    total = 0.0
    for line in output.splitlines():
        fields = line.split(b",")
        if len(fields) != 2:
            continue  # not a record
        try:
            pid = int(fields[0])
        except ValueError:
            continue
        if pid not in pids:
            continue
        try:
            used = float(fields[1])
        except ValueError:
            return None
        if not math.isfinite(used) or used < 0:
            return None
        total += used
    return total


def _on_path(name: str) -> str | None:
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def _resident(pid: int) -> int:
    """Resident bytes of pid from /proc/PID/statm ("size resident shared ..." in pages); 0 if gone."""
    fields = (_read(f"/proc/{pid}/statm", whole=False) or b"").split()
    return int(fields[1]) * _PAGE_SIZE if len(fields) > 1 else 0


def _tag_entry(tag: tuple[str, str]) -> bytes:
    name, value = tag
    return os.fsencode(f"{name}={value}")


def _proc_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _read(path: str, whole: bool = True) -> bytes | None:
    """A /proc file, or its first 4 KiB if not whole; None if it cannot be read. Plain os calls:
    open() costs about as much as the read itself, and a look reads a file or two per process on
    the machine."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if not whole:
            return os.read(fd, 4096)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _stat(pid: int) -> tuple[int, int, bool, int] | None:
    """(ppid, session id, is zombie, start time) from /proc/PID/stat; None if gone."""
    data = _read(f"/proc/{pid}/stat", whole=False)  # under 1.5 KiB
    if not data:
        return None
    # comm may contain spaces and parentheses; the fields after the last ")" are fixed.
    fields = data[data.rindex(b")") + 2:].split(maxsplit=20)
    return int(fields[1]), int(fields[3]), fields[0] == b"Z", int(fields[19])


def _has_entry(pid: int, entry: bytes) -> bool:
    data = _read(f"/proc/{pid}/environ")
    return data is not None and entry in data.split(b"\0")
