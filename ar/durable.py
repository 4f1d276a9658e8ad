"""Durable writes: every file `ar` rewrites goes through here.

A write either lands whole or not at all (temp file + fsync + rename), so killing `ar` at
any instant leaves the old or the new content, never a torn file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from ar.errors import ArError

TMP_MARK = ".tmp-"  # temp files carry this in their name; repair deletes leftovers


def write_bytes_atomic(path: Path, data: bytes, mode: int | None = None, sync: bool = True) -> None:
    """sync=False for records that need only survive the death of a process, not of the machine
    (the page cache keeps them): it saves the ~1 ms of an fsync on the iteration's path."""
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644 if mode is None else mode)
    try:
        _write_all(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less (a nearly full disk): go on until all is written or it raises."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def dump_json(obj: Any) -> bytes:
    # orjson writes NaN/inf as null: result files are always valid JSON
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def write_json_atomic(path: Path, obj: Any, sync: bool = True) -> None:
    write_bytes_atomic(path, dump_json(obj), sync=sync)


def read_json(path: Path, fix: str) -> Any:
    """Parsed JSON, or an ArError naming the file and the fix (never a traceback)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArError(f"{path.name} is missing ({path.parent})", fix) from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ArError(f"{path.name} is not valid JSON ({exc})", fix) from None


def read_json_or_none(path: Path) -> Any:
    """Parsed JSON, or None when the file is missing or unreadable (callers rebuild it)."""
    try:
        return orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


def append_line(path: Path, line: str) -> None:
    """Append one line with a single write (O_APPEND), so a kill leaves it whole or partial-at-end only."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _write_all(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


try:  # the builtin implementation: hashlib would load OpenSSL, ~4 ms on every command
    from _sha256 import sha256
except ImportError:  # Python 3.12+ names it _sha2
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256


def sha256_file(path: Path) -> str:
    digest = sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):  # bounded memory for a file of any size
            digest.update(chunk)
    return digest.hexdigest()


def remove_temp_files(directory: Path) -> None:
    for leftover in directory.glob(f"*{TMP_MARK}*"):
        leftover.unlink(missing_ok=True)
