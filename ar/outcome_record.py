"""The watchdog's outcome of a run, saved the moment the training ends, so that a finished run
is always judged on its log, even when the disk fills before its result.json is written or the
supervisor dies while judging it.

The file is reserved when the run starts (its blocks allocated while there is room) and later
overwritten in place: on filesystems that overwrite in place (ext4, xfs, tmpfs) saving the
outcome needs no new space on a full disk; copy-on-write ones (btrfs, ZFS) may still need some.
"""

from __future__ import annotations

import errno
import json
import os

from ar.layout import RunPaths

RESERVED_BYTES = 4096
_MAX_PIDS = 64  # survivors listed in the record; the rest are counted by the unclean sentinel


def reserve(run: RunPaths) -> None:
    """Raises OSError (ENOSPC) when even this much does not fit: the run must not start."""
    fd = os.open(run.outcome, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        try:
            os.posix_fallocate(fd, 0, RESERVED_BYTES)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem without fallocate
                raise
            os.pwrite(fd, b" " * RESERVED_BYTES, 0)
    finally:
        os.close(fd)


def save(run: RunPaths, outcome, started: float, seconds: int) -> None:
    record = {"outcome": outcome._replace(survivors=outcome.survivors[:_MAX_PIDS])._asdict(), "started": started, "seconds": seconds}
    data = json.dumps(record).encode()
    if len(data) > RESERVED_BYTES:
        return  # cannot happen with capped fields; the repair then records a crash, as before
    fd = os.open(run.outcome, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        # In place: no new blocks. No fsync: it guards against the death of the supervisor, whose
        # writes the page cache keeps; a machine crash makes the run a crash, as it always did.
        os.pwrite(fd, data.ljust(RESERVED_BYTES), 0)
    finally:
        os.close(fd)


def load(run: RunPaths):
    """(Outcome, started, seconds) of a run whose training ended; None if it never did."""
    from ar.watchdog import Outcome

    try:
        record = json.loads(run.outcome.read_bytes().strip() or b"null")
        return Outcome(**record["outcome"]), float(record["started"]), int(record["seconds"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
