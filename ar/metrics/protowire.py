"""Just enough of the protobuf wire format to read wandb's and TensorBoard's records.

Neither library is imported: `ar` reads their files itself, so it needs neither installed
and pays no import time for them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed message (a record cut short, or not protobuf at all)."""


def varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field; LENGTH values are bytes, FIXED64/32 raw ints."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = varint(data, pos)
        elif wire == LENGTH:
            size, pos = varint(data, pos)
            if pos + size > end:
                raise WireError("truncated field")
            value, pos = data[pos : pos + size], pos + size
        elif wire == FIXED64:
            if pos + 8 > end:
                raise WireError("truncated field")
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == FIXED32:
            if pos + 4 > end:
                raise WireError("truncated field")
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise WireError(f"unsupported wire type {wire}")
        yield number, wire, value


def as_double(raw: int) -> float:
    return struct.unpack("<d", raw.to_bytes(8, "little"))[0]


def as_signed64(raw: int) -> int:
    return raw - (1 << 64) if raw >= 1 << 63 else raw
