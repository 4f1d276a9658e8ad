"""Metrics from TensorBoard event files: the last value of each scalar tag, read without TensorBoard.

An event file is a TFRecord stream: per record a u64 LE length, the u32 masked CRC-32C of those 8 bytes,
the data (one serialized `Event`), the u32 masked CRC-32C of the data. Each file is read in chunks, never
held whole, and with no cap on the number of points (TensorBoard's EventAccumulator keeps 10,000 by
default). Events without a summary (file_version, graphs, session logs) cost one pass over their keys.

Field numbers, checked against tensorboard 2.21's compat protos (the *_pb2 descriptors of
tensorboard/compat/proto event, summary, tensor, tensor_shape, types):
  Event            wall_time=1 double, step=2 int64, file_version=3, graph_def=4, summary=5, log_message=6,
                   session_log=7, tagged_run_metadata=8, meta_graph_def=9, source_metadata=10
  Summary          value=1 (repeated Value)
  Summary.Value    tag=1, simple_value=2 float, obsolete_old_style_histogram=3, image=4, histo=5, audio=6,
                   node_name=7, tensor=8 TensorProto, metadata=9 SummaryMetadata
  SummaryMetadata  plugin_data=1 (PluginData: plugin_name=1, content=2), display_name=2,
                   summary_description=3, data_class=4 (DATA_CLASS_SCALAR=1)
  TensorProto      dtype=1, tensor_shape=2, version_number=3, tensor_content=4, float_val=5, double_val=6,
                   int_val=7, string_val=8, scomplex_val=9, int64_val=10, bool_val=11, dcomplex_val=12,
                   half_val=13, resource_handle_val=14, variant_val=15, uint32_val=16, uint64_val=17
  TensorShapeProto dim=2, unknown_rank=3 (no dim and no unknown_rank: rank 0)
  DataType         DT_FLOAT=1, DT_DOUBLE=2, DT_INT32=3, DT_UINT8=4, DT_INT16=5, DT_INT8=6, DT_INT64=9,
                   DT_BFLOAT16=14, DT_UINT16=17, DT_HALF=19, DT_UINT32=22, DT_UINT64=23
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ar.metrics.errors import MetricsError
from ar.metrics.protowire import FIXED32, FIXED64, LENGTH, VARINT, WireError, as_signed64, fields, varint

DEFAULT_GLOB = "{run_dir}/**/events.out.tfevents.*"

CHUNK_SIZE = 1 << 20

_u64 = struct.Struct("<Q").unpack_from
_u32 = struct.Struct("<I").unpack_from
_f32 = struct.Struct("<f").unpack_from
_f64 = struct.Struct("<d").unpack_from

# The bytes of a rank-0 float / double tensor as every Python writer makes it (tensor_util.make_tensor_proto):
# dtype, an empty tensor_shape, then float_val / double_val packed with one element.
_FLOAT_SCALAR = b"\x08\x01\x12\x00\x2a\x04"
_DOUBLE_SCALAR = b"\x08\x02\x12\x00\x32\x08"

_SCALAR_PLUGINS = {b"", b"scalars"}
_DATA_CLASS_SCALAR = 1


def _half(bits: int) -> float:
    return struct.unpack("<e", (bits & 0xFFFF).to_bytes(2, "little"))[0]


def _bfloat16(bits: int) -> float:
    return struct.unpack("<f", ((bits & 0xFFFF) << 16).to_bytes(4, "little"))[0]


# dtype -> (struct format of one element in tensor_content, the *_val field, how that field's number reads)
_DTYPES: dict[int, tuple[str, int, object]] = {
    1: ("<f", 5, None),  # DT_FLOAT: float_val, fixed32 floats
    2: ("<d", 6, None),  # DT_DOUBLE: double_val, fixed64 doubles
    3: ("<i", 7, as_signed64),  # DT_INT32: int_val (negative int32s are sign-extended varints)
    4: ("<B", 7, int),  # DT_UINT8
    5: ("<h", 7, as_signed64),  # DT_INT16
    6: ("<b", 7, as_signed64),  # DT_INT8
    9: ("<q", 10, as_signed64),  # DT_INT64: int64_val
    14: ("bf16", 13, _bfloat16),  # DT_BFLOAT16: half_val holds the 16 bits
    17: ("<H", 7, int),  # DT_UINT16
    19: ("<e", 13, _half),  # DT_HALF: half_val holds the 16 bits
    22: ("<I", 16, int),  # DT_UINT32: uint32_val
    23: ("<Q", 17, int),  # DT_UINT64: uint64_val
}


def read_events(paths: list[Path]) -> dict[str, float]:
    """Last value per tag over the files: the scalar with the highest step wins; on equal steps the later
    one (file order, then record order). Raise MetricsError with a one-line reason only when a file is not
    an event file at all; a file cut mid-record (the writer was killed) yields what came before."""
    latest: dict[bytes, tuple[int, float]] = {}
    scalar_tag: dict[bytes, bool] = {}  # a tag's metadata comes with its first value only (TF's writers)
    for path in paths:
        try:
            _read_file(path, latest, scalar_tag)
        except FileNotFoundError:
            continue  # removed since it was found: nothing of it to read
        except OSError as exc:
            raise MetricsError(f"cannot read event file {path}: {exc.strerror or exc}") from None
    return {tag.decode("utf-8", "replace"): value for tag, (_, value) in latest.items()}


def _read_file(path: Path, latest: dict[bytes, tuple[int, float]], scalar_tag: dict[bytes, bool]) -> None:
    with open(path, "rb") as f:
        buf = f.read(CHUNK_SIZE)
        # The first record's length CRC tells an event file (even one cut short) from any other bytes.
        if len(buf) >= 12 and _masked_crc32c(buf[:8]) != _u32(buf, 8)[0]:
            raise MetricsError(f"{path} is not a TensorBoard event file (bad record header)")
        first = True
        good_headers: set[bytes] = set()  # headers already checked: a few lengths recur over and over
        pos = 0
        while True:
            if len(buf) - pos < 12:
                more = f.read(CHUNK_SIZE)
                if not more:
                    return  # the end, or a header cut short
                buf = buf[pos:] + more
                pos = 0
                continue
            header = buf[pos : pos + 12]
            if header not in good_headers:
                if _masked_crc32c(header[:8]) != _u32(header, 8)[0]:
                    return  # a damaged length: nothing after it can be framed
                good_headers.add(header)
            start = pos + 12
            end = start + _u64(header)[0]
            if end + 4 > len(buf):
                need = end + 4 - len(buf)
                if need > os.fstat(f.fileno()).st_size - f.tell():
                    return  # the record runs past the end: the writer was stopped while writing it
                more = f.read(max(need, CHUNK_SIZE))
                if len(more) < need:
                    return
                buf = buf[pos:] + more
                pos = 0
                continue
            try:
                _event(buf, start, end, latest, scalar_tag)
            except (WireError, IndexError, struct.error):
                if first:
                    raise MetricsError(f"{path} is not a TensorBoard event file (no Event in it)") from None
                # A damaged record inside the file: its framing held, so the next one can still be read.
            first = False
            pos = end + 4


def _event(buf: bytes, p: int, end: int, latest: dict[bytes, tuple[int, float]], scalar_tag: dict[bytes, bool]) -> None:
    step = 0
    summaries = None
    while p < end:
        key = buf[p]
        if key == 0x09:  # wall_time, fixed64
            p += 9
        elif key == 0x10:  # step, varint int64
            step = buf[p + 1]
            if step < 0x80:
                p += 2
            else:
                step, p = varint(buf, p + 1)
                if step >= 1 << 63:
                    step -= 1 << 64
        elif key == 0x2A:  # summary
            size, p = _length(buf, p + 1)
            if summaries is None:
                summaries = [(p, p + size)]
            else:
                summaries.append((p, p + size))  # a repeated message field merges: read every part
            p += size
        else:
            p = _skip(buf, p, end)
    if p != end:
        raise WireError("field runs past the record")
    if summaries is not None:
        for start, stop in summaries:
            _summary(buf, start, stop, step, latest, scalar_tag)


def _summary(
    buf: bytes, p: int, end: int, step: int, latest: dict[bytes, tuple[int, float]], scalar_tag: dict[bytes, bool]
) -> None:
    while p < end:
        if buf[p] != 0x0A:  # not a Summary.value
            p = _skip(buf, p, end)
            continue
        size, p = _length(buf, p + 1)
        vend = p + size
        if vend > end:
            raise WireError("value runs past the summary")
        tag = b""
        value = tensor = meta = None
        while p < vend:
            key = buf[p]
            if key == 0x0A:  # tag
                n, p = _length(buf, p + 1)
                tag = buf[p : p + n]
                p += n
            elif key == 0x15:  # simple_value, fixed32 float
                value = _f32(buf, p + 1)[0]
                p += 5
            elif key == 0x42:  # tensor
                n, p = _length(buf, p + 1)
                tensor = (p, p + n)
                p += n
            elif key == 0x4A:  # metadata
                n, p = _length(buf, p + 1)
                meta = buf[p : p + n]
                p += n
            else:  # image, histo, audio, node_name, ...
                p = _skip(buf, p, vend)
        if p != vend:
            raise WireError("field runs past the value")
        if meta is not None:
            verdict = _metadata_seen.get(meta)
            scalar_tag[tag] = _is_scalar_metadata(meta) if verdict is None else verdict
        if value is None:
            if tensor is None or not scalar_tag.get(tag, True):
                continue
            value = _tensor_scalar(buf, *tensor)
            if value is None:
                continue
        if not tag:
            continue
        old = latest.get(tag)
        if old is None or step >= old[0]:
            latest[tag] = (step, value)


_metadata_seen: dict[bytes, bool] = {}  # TensorBoard's own Writer repeats the same metadata with every value


def _is_scalar_metadata(meta: bytes) -> bool:
    """Whether values under this metadata may be scalars: the scalars plugin, a scalar data class, or no plugin."""
    known = _metadata_seen.get(meta)
    if known is not None:
        return known
    plugin, data_class = b"", 0
    for number, wire, value in fields(meta):
        if number == 1 and wire == LENGTH:
            for n, w, v in fields(value):  # type: ignore[arg-type]
                if n == 1 and w == LENGTH:
                    plugin = v  # type: ignore[assignment]
        elif number == 4 and wire == VARINT:
            data_class = value  # type: ignore[assignment]
    verdict = data_class == _DATA_CLASS_SCALAR or plugin in _SCALAR_PLUGINS
    if len(_metadata_seen) < 4096:
        _metadata_seen[meta] = verdict
    return verdict


def _tensor_scalar(buf: bytes, p: int, end: int) -> float | None:
    """The value of a rank-0 numeric tensor; None for any other tensor (strings, histograms, images...)."""
    if end - p == 10 and buf.startswith(_FLOAT_SCALAR, p):
        return _f32(buf, p + 6)[0]
    if end - p == 14 and buf.startswith(_DOUBLE_SCALAR, p):
        return _f64(buf, p + 6)[0]
    dtype, content, vals = 0, None, []
    for number, wire, value in fields(buf[p:end]):
        if number == 1 and wire == VARINT:
            dtype = value
        elif number == 2 and wire == LENGTH:
            if value:  # any dim (or unknown_rank): not rank 0
                for n, _, _ in fields(value):  # type: ignore[arg-type]
                    if n in (2, 3):
                        return None
        elif number == 4 and wire == LENGTH:
            content = value
        else:
            vals.append((number, wire, value))
    spec = _DTYPES.get(dtype)  # type: ignore[arg-type]
    if spec is None:
        return None  # string, bool, complex, resource, variant...
    fmt, field, convert = spec
    if content is not None:
        if fmt == "bf16":
            return _bfloat16(int.from_bytes(content, "little")) if len(content) == 2 else None  # type: ignore[arg-type]
        if len(content) != struct.calcsize(fmt):  # type: ignore[arg-type]
            return None
        return float(struct.unpack(fmt, content)[0])  # type: ignore[arg-type]
    for number, wire, value in vals:
        if number != field:
            continue
        if field == 5:
            if wire == FIXED32:
                return _f32(value.to_bytes(4, "little"))[0]  # type: ignore[union-attr]
            if wire == LENGTH and len(value) >= 4:  # type: ignore[arg-type]
                return _f32(value)[0]  # type: ignore[arg-type]
        elif field == 6:
            if wire == FIXED64:
                return _f64(value.to_bytes(8, "little"))[0]  # type: ignore[union-attr]
            if wire == LENGTH and len(value) >= 8:  # type: ignore[arg-type]
                return _f64(value)[0]  # type: ignore[arg-type]
        else:
            if wire == LENGTH:  # packed
                if not value:
                    continue
                value = varint(value, 0)[0]  # type: ignore[arg-type]
            elif wire != VARINT:
                continue
            return float(convert(value))  # type: ignore[operator]
        return None
    return 0.0  # a rank-0 tensor with no values holds the dtype's zero (TensorFlow's reading)


def _length(buf: bytes, p: int) -> tuple[int, int]:
    """A length varint at p -> (length, position after it); one byte in the common case."""
    n = buf[p]
    return (n, p + 1) if n < 0x80 else varint(buf, p)


def _skip(buf: bytes, p: int, end: int) -> int:
    """The position after the field at p (any field the reader does not need)."""
    key, p = varint(buf, p)
    wire = key & 7
    if wire == VARINT:
        _, p = varint(buf, p)
    elif wire == FIXED64:
        p += 8
    elif wire == LENGTH:
        size, p = varint(buf, p)
        p += size
    elif wire == FIXED32:
        p += 4
    else:
        raise WireError(f"unsupported wire type {wire}")
    if p > end:
        raise WireError("field runs past its message")
    return p


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C (Castagnoli), rotated right by 15 bits plus a constant."""
    table = _CRC_TABLE
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
