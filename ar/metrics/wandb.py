"""Metrics from a wandb run's own files: the last value of each numeric key, read without wandb.

Where a run's files are: `<WANDB_DIR>/wandb/` (or `.wandb/` when that exists, as wandb chooses), one
directory per `wandb.init`: `run-<YYYYmmdd_HHMMSS>-<id>` online, `offline-run-<...>-<id>` offline; the
stamp is the local start time (wandb_settings: `datetime.fromtimestamp(x_start_time)`). An online run
leaves `files/wandb-summary.json` (a JSON object, nested dicts for nested keys), which is read as is.
wandb 0.31 offline writes no summary file: the metrics are only in the run's `run-<id>.wandb`
transaction log, read here record by record.

The record file: a 7-byte header `:W&B`, 0xBEE1 (u16 LE), version 0; then LevelDB-log framing in
32 KiB blocks (the first block's records start after the header): per physical record crc32c (4, not
checked), length (2, LE), type (1: FULL=1 FIRST=2 MIDDLE=3 LAST=4), data; a block tail shorter than 7
bytes is zero padding. The file is streamed one block at a time. A record cut short at the end of the
file (the run was killed mid-write; wandb-core also flushes in whole blocks, so a split record's end
is often not yet on disk) is ignored.

Each logical record is a protobuf `Record`. Field numbers, checked against wandb 0.31's descriptors
(wandb/proto/v7/wandb_internal_pb2.py, loaded with protobuf 7; `wandb_internal` package):
  Record         num=1, history=2 HistoryRecord, summary=3 SummaryRecord, output=4, config=5, files=6,
                 stats=7, ..., run=17, exit=18 RunExitRecord, final=20, header=21, footer=22, ...,
                 control=16, uuid=19, request=100, _info=200
  HistoryRecord  item=1 (repeated HistoryItem), step=2 HistoryStep, _info=200
  HistoryItem    key=1, nested_key=2 (repeated), value_json=16; the oneof `value`: none=3, boolean=4,
                 integer=5 sint64, number=6 double, text=7, json=8 (0.31 writes only value_json)
  SummaryRecord  update=1, remove=2 (repeated SummaryItem), _info=200
  SummaryItem    key=1, nested_key=2 (repeated), value_json=16

What wandb-core 0.31 writes (seen in real offline files): each `wandb.log` step is a summary record
(the step's keys, or `{"min": ..}`-style dicts for `define_metric(summary=...)`) then a history record,
both with every key as `nested_key` (`["eval", "top1"]` for a nested dict, `["val/loss"]` for a flat
key); `run.summary[k] = v` is a summary update with `key` and the whole value as JSON; `del
run.summary[k]` a summary remove. Media (histograms, images, tables) are spread over items under one
prefix, one of them `<prefix>._type`.

The result, from either source: keys flattened with '.', numbers only (nan/inf kept), the last value
of each key wins (records in file order), a summary remove deletes the key and the keys under it;
wandb's own `_`-prefixed keys (`_step`, `_runtime`, `_timestamp`, `_wandb`) and media are skipped.
A dict value sets its leaves and leaves the key's other leaves alone, so `loss` (last logged) and
`loss.min` (define_metric) both stay. About 1 s for a 23 MB file (40k steps of 8 keys).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from ar.metrics.errors import MetricsError
from ar.metrics.protowire import FIXED32, FIXED64, LENGTH, VARINT, WireError, as_double, fields, varint

BLOCK_SIZE = 32 * 1024
HEADER_SIZE = 7  # of a physical record: crc32c, length, type
FILE_MAGIC = b":W&B\xe1\xbe"  # ":W&B" then 0xBEE1 little-endian
FILE_VERSION = 0
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

_RECORD_HISTORY, _RECORD_SUMMARY = 2, 3
_ITEM_KEY, _ITEM_NESTED_KEY, _ITEM_INTEGER, _ITEM_NUMBER, _ITEM_JSON, _ITEM_VALUE_JSON = 1, 2, 5, 6, 8, 16
_SUMMARY_UPDATE, _SUMMARY_REMOVE = 1, 2

_RUN_DIR = re.compile(r"(?:offline-)?run-(?P<stamp>\d{8}_\d{6})-(?P<id>.+)")
_NUMBER_START = frozenset(b"-0123456789NI")  # a JSON number, NaN, Infinity, -Infinity

Path_ = tuple[str, ...]
_Key = tuple[Path_, "str | None", bool]  # key path, flat name (None: skipped), whether it is a media `_type`


def find_wandb_runs(run_dir: Path, wandb_dir: str | None, started: float) -> list[Path]:
    """wandb run directories written by THIS run, newest last.

    `ar` sets WANDB_DIR=<run_dir> for the child unless the user configured WANDB_DIR; `wandb_dir` is the
    user's value then (relative to the current directory), a directory other runs share: only run
    directories whose start stamp is at or after `started` (epoch seconds, compared to the second)
    count. Never guessed from `latest-run`.
    """
    shared = wandb_dir is not None
    root = Path(wandb_dir).expanduser() if wandb_dir is not None else Path(run_dir)
    since = math.floor(started)
    found: list[tuple[float, int, str, Path]] = []
    for stage in ("wandb", ".wandb"):
        try:
            entries = list(os.scandir(root / stage))
        except OSError:
            continue
        for entry in entries:
            match = _RUN_DIR.fullmatch(entry.name)
            if match is None:
                continue
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                mtime_ns = entry.stat(follow_symlinks=False).st_mtime_ns
            except OSError:
                continue
            begun = _stamp_epoch(match["stamp"])
            if shared and (begun is None or begun < since):
                continue
            # The stamp has whole seconds: two runs started in the same second are ordered by mtime.
            found.append((begun if begun is not None else mtime_ns / 1e9, mtime_ns, entry.name, Path(entry.path)))
    found.sort()
    return [path for *_, path in found]


def read_wandb(run_dir: Path, wandb_dir: str | None, started: float) -> dict[str, float]:
    """Final metrics of this run's wandb run (the last one when several); {} when there is none.

    Online runs: files/wandb-summary.json; offline runs: the run-<id>.wandb record file. MetricsError
    (a one-line reason) when the data is there but unreadable.
    """
    runs = find_wandb_runs(run_dir, wandb_dir, started)
    if not runs:
        return {}
    run = runs[-1]
    summary = run / "files" / "wandb-summary.json"
    if summary.is_file():
        return read_summary_file(summary)
    record_file = _record_file(run, _RUN_DIR.fullmatch(run.name)["id"])
    if record_file is None:
        return {}
    return read_record_file(record_file)


def read_summary_file(path: Path) -> dict[str, float]:
    """The numeric values of a wandb-summary.json, flattened."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise MetricsError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not text.strip():
        raise MetricsError(f"{path} is empty (wandb did not finish writing it)")
    try:
        data = json.loads(text)
    except UnicodeDecodeError:
        raise MetricsError(f"{path} is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise MetricsError(f"{path} is not valid JSON (truncated?): {exc.msg} at {where}") from None
    except RecursionError:
        raise MetricsError(f"{path} is nested too deeply to read") from None
    if not isinstance(data, dict):
        raise MetricsError(f"{path} is not a JSON object but {type(data).__name__}")
    metrics: dict[str, float] = {}
    for key, value in data.items():
        if not key.startswith("_"):
            _set_value(metrics, key, value)
    return metrics


def read_record_file(path: Path) -> dict[str, float]:
    """The metrics in one run-<id>.wandb file: history rows and summary updates in file order, last wins."""
    metrics: dict[str, float] = {}
    keys: dict[bytes, _Key] = {}
    try:
        with open(path, "rb") as f:
            for offset, payload in _records(f, path):
                try:
                    _apply(payload, metrics, keys)
                except WireError as exc:
                    raise MetricsError(f"{path}: corrupt record at byte {offset} ({exc})") from None
    except OSError as exc:
        raise MetricsError(f"cannot read {path}: {exc.strerror or exc}") from None
    return metrics


def _stamp_epoch(stamp: str) -> float | None:
    try:
        return time.mktime(time.strptime(stamp, "%Y%m%d_%H%M%S"))
    except (ValueError, OverflowError):
        return None


def _record_file(run: Path, run_id: str) -> Path | None:
    named = run / f"run-{run_id}.wandb"
    if named.is_file():
        return named
    # A run directory with a suffix (x_sync_dir_suffix) still holds run-<id>.wandb: take the one there is.
    others = sorted(p for p in run.glob("run-*.wandb") if p.is_file())
    return others[-1] if others else None


def _records(f, path: Path) -> Iterator[tuple[int, bytes]]:
    """(file offset, payload) of each complete logical record; stops quietly at a record cut short by EOF."""
    head = f.read(HEADER_SIZE)
    if len(head) < HEADER_SIZE:
        if (FILE_MAGIC + bytes([FILE_VERSION])).startswith(head):
            return  # created, the header not written yet
        raise MetricsError(f"{path} is not a wandb record file (no ':W&B' header)")
    if head[:6] != FILE_MAGIC:
        raise MetricsError(f"{path} is not a wandb record file (no ':W&B' header)")
    if head[6] != FILE_VERSION:
        raise MetricsError(f"{path}: unsupported wandb record file version {head[6]} (this reader knows 0)")
    block = head + f.read(BLOCK_SIZE - HEADER_SIZE)
    block_start, pos = 0, HEADER_SIZE
    parts: list[bytes] = []  # the fragments of a record begun (FIRST) and not yet ended (LAST)
    begun_at = 0
    while True:
        size = len(block)
        at_eof = size < BLOCK_SIZE
        while size - pos >= HEADER_SIZE:
            length = block[pos + 4] | block[pos + 5] << 8
            kind = block[pos + 6]
            start, end = pos + HEADER_SIZE, pos + HEADER_SIZE + length
            offset = block_start + pos
            if end > size:
                if at_eof:
                    return  # the last record, cut short
                raise MetricsError(f"{path}: corrupt record at byte {offset} (runs past its block)")
            pos = end
            if kind == FULL:
                if parts:
                    raise MetricsError(f"{path}: corrupt record at byte {begun_at} (never ended)")
                yield offset, block[start:end]
            elif kind == FIRST:
                if parts:
                    raise MetricsError(f"{path}: corrupt record at byte {begun_at} (never ended)")
                parts, begun_at = [block[start:end]], offset
            elif kind == MIDDLE or kind == LAST:
                if not parts:
                    raise MetricsError(f"{path}: corrupt record at byte {offset} (a continuation with no start)")
                parts.append(block[start:end])
                if kind == LAST:
                    yield begun_at, b"".join(parts)
                    parts = []
            elif kind == 0 and length == 0:
                break  # zero fill (a preallocated or padded tail): nothing more in this block
            else:
                raise MetricsError(f"{path}: corrupt record at byte {offset} (record type {kind})")
        if at_eof:
            return  # anything left is a header cut short, or a record begun and not ended
        block_start += BLOCK_SIZE
        block, pos = f.read(BLOCK_SIZE), 0
        if not block:
            return


def _apply(payload: bytes, metrics: dict[str, float], keys: dict[bytes, _Key]) -> None:
    for number, value in _length_fields(payload):
        if number == _RECORD_HISTORY:
            _apply_items([v for n, v in _length_fields(value) if n == 1], metrics, keys)
            return
        if number == _RECORD_SUMMARY:
            updates: list[bytes] = []
            for n, v in _length_fields(value):
                if n == _SUMMARY_UPDATE:
                    updates.append(v)
                elif n == _SUMMARY_REMOVE:
                    if updates:  # keep the record's order: the updates before this remove first
                        _apply_items(updates, metrics, keys)
                        updates = []
                    name = _item(v, keys)[0][1]
                    if name is not None:
                        _remove(metrics, name)
            _apply_items(updates, metrics, keys)
            return


def _length_fields(data: bytes) -> list[tuple[int, bytes]]:
    """(field number, bytes) of a message's length-delimited fields, in order; its other fields skipped.

    protowire.fields() with the one-byte tags and lengths read inline: most of wandb's are.
    """
    out = []
    pos, end = 0, len(data)
    try:
        while pos < end:
            key = data[pos]
            size = data[pos + 1]
            if key & 0x87 == LENGTH and size < 0x80:  # a one-byte tag and length
                stop = pos + 2 + size
                out.append((key >> 3, data[pos + 2 : stop]))
                pos = stop
                continue
            if key < 0x80:
                pos += 1
            else:
                key, pos = varint(data, pos)
            wire = key & 7
            if wire == LENGTH:
                size, pos = varint(data, pos)
                stop = pos + size
                out.append((key >> 3, data[pos:stop]))
                pos = stop
            elif wire == VARINT:
                pos = varint(data, pos)[1]
            elif wire == FIXED64:
                pos += 8
            elif wire == FIXED32:
                pos += 4
            else:
                raise WireError(f"unsupported wire type {wire}")
    except IndexError:
        raise WireError("truncated field") from None
    if pos > end:
        raise WireError("truncated field")
    return out


def _item(data: bytes, keys: dict[bytes, _Key]) -> tuple[_Key, object]:
    """The key and value of a HistoryItem / SummaryItem; the value is JSON bytes, a float, or None.

    Fast path for what wandb-core writes: the key fields, then value_json (tag 0x82 0x01) with a one-byte
    length, last. JSON text has no raw 0x01 byte, so the last 0x82 0x01 is that tag. The key bytes repeat
    every step: their path and name are looked up in `keys` (parsed, and so checked, once).
    """
    key, tag, value = data.rpartition(b"\x82\x01")
    if tag and value and value[0] == len(value) - 1:
        known = keys.get(key)
        if known is None:
            known = keys[key] = _key(_item_slow(key)[0])
        return known, value[1:]
    path, value = _item_slow(data)
    return _key(path), value


def _key(path: Path_) -> _Key:
    name = None if not path or path[0].startswith("_") else ".".join(path)
    return path, name, len(path) > 1 and path[-1] == "_type"


def _item_slow(data: bytes) -> tuple[Path_, object]:
    key = ""
    nested: list[str] = []
    value: object = None
    for number, wire, raw in fields(data):
        if number == _ITEM_VALUE_JSON and wire == LENGTH:
            value = raw
        elif number == _ITEM_NESTED_KEY and wire == LENGTH:
            nested.append(raw.decode("utf-8", "replace"))
        elif number == _ITEM_KEY and wire == LENGTH:
            key = raw.decode("utf-8", "replace")
        elif number == _ITEM_NUMBER and wire == FIXED64:
            value = as_double(raw)
        elif number == _ITEM_INTEGER and wire == VARINT:
            value = float((raw >> 1) ^ -(raw & 1))  # zigzag sint64
        elif number == _ITEM_JSON and wire == LENGTH:
            value = raw
    return (tuple(nested) if nested else (key,) if key else ()), value


def _apply_items(items: list[bytes], metrics: dict[str, float], keys: dict[bytes, _Key]) -> None:
    parsed = []
    any_media = False
    for data in items:  # _item(), inlined: this loop runs for every value of every step
        key, tag, value = data.rpartition(b"\x82\x01")
        if tag and value and value[0] == len(value) - 1:
            known = keys.get(key)
            if known is None:
                known = keys[key] = _key(_item_slow(key)[0])
            value = value[1:]
        else:
            path, value = _item_slow(data)
            known = _key(path)
        any_media = any_media or known[2]
        parsed.append((known, value))
    # A media value (histogram, image, table) is several items under one prefix, one of them `_type`.
    media = {key[0][:-1] for key, _ in parsed if key[2]} if any_media else None
    for (path, name, _), value in parsed:
        if name is None or value is None:
            continue
        if media and any(path[:i] in media for i in range(1, len(path))):
            continue
        if type(value) is float:
            metrics[name] = value
        elif value and value[0] in _NUMBER_START:
            try:
                metrics[name] = float(value)  # JSON numbers, NaN, Infinity, -Infinity all read as floats
            except ValueError:
                pass
        elif value[:1] == b"{":
            try:
                _set_value(metrics, name, json.loads(value))
            except (ValueError, RecursionError):
                pass  # not JSON after all: not a number either


def _set_value(metrics: dict[str, float], name: str, value: object) -> None:
    """Sets the number `value`, or the numbers in the dict `value` under `name.`; skips everything else."""
    if isinstance(value, dict):
        if "_type" in value:
            return  # media
        for key, sub in value.items():
            _set_value(metrics, f"{name}.{key}", sub)
    elif isinstance(value, float):
        metrics[name] = value
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            metrics[name] = float(value)
        except OverflowError:
            pass


def _remove(metrics: dict[str, float], name: str) -> None:
    metrics.pop(name, None)
    prefix = name + "."
    for key in [k for k in metrics if k.startswith(prefix)]:
        del metrics[key]
