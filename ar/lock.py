"""The iteration lock: one flock per experiment, held by whoever owns the running iteration.

flock (not a pid file) because the kernel releases it when its holder dies, however it dies,
and because an inherited descriptor keeps holding it: `ar run` takes the lock, then hands it to
the detached supervisor that outlives it.
"""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path


class IterationLock:
    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def acquire(self, timeout: float | None) -> bool:
        """Block until free (None: forever); False when timeout seconds pass first."""
        if timeout is None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            return True
        if timeout <= 0:
            return self.try_acquire()

        def expire(signum, frame):
            raise TimeoutError

        # A timer signal interrupts the blocking flock: we wake the instant the holder exits, no polling.
        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            return True
        except TimeoutError:
            return False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock unless a child process still holds a copy
            self.fd = -1

    def __enter__(self) -> "IterationLock":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
