"""The tensorboard metric backend on real event files written by TensorBoard's own writers (no TensorFlow)."""
from __future__ import annotations

import math
import os
import random
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from tensorboard.compat.proto import (
    event_pb2,
    summary_pb2,
    tensor_pb2,
    tensor_shape_pb2,
)
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.plugins.histogram.summary_v2 import histogram_pb
from tensorboard.plugins.scalar.summary_v2 import scalar_pb
from tensorboard.plugins.text.summary_v2 import text_pb
from tensorboard.summary import Writer
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

from ar.metrics.errors import MetricsError
from ar.metrics.tensorboard import DEFAULT_GLOB, read_events
from ar.metrics.written import files_written_since as find_event_files

SCALARS = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DataClass.DATA_CLASS_SCALAR,
)


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def old(tag: str, value: float) -> summary_pb2.Summary.Value:
    """An old-style scalar, as torch's and tensorboardX's add_scalar write by default."""
    return summary_pb2.Summary.Value(tag=tag, simple_value=value)


def new(tag: str, value, metadata: bool = True, **tensor) -> summary_pb2.Summary.Value:
    """A new-style scalar: a rank-0 tensor (add_scalar(new_style=True), tf.summary.scalar)."""
    proto = tensor_pb2.TensorProto(**tensor) if tensor else tensor_util.make_tensor_proto(value)
    return summary_pb2.Summary.Value(tag=tag, tensor=proto, metadata=SCALARS if metadata else None)


def write(logdir: Path, *events: tuple[int, list[summary_pb2.Summary.Value]]) -> Path:
    """One event file (a file_version record first, as always), one Event per (step, values)."""
    before = set(logdir.glob("events.out.tfevents.*")) if logdir.exists() else set()
    writer = EventFileWriter(str(logdir))
    for step, values in events:
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=values)))
    writer.close()
    (path,) = set(logdir.glob("events.out.tfevents.*")) - before
    return path


def append_record(path: Path, data: bytes) -> None:
    """A hand-made Event record, framed as TensorBoard's RecordWriter frames them."""
    header = struct.pack("<Q", len(data))
    with path.open("ab") as f:
        f.write(header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data)))


def records(path: Path) -> list[tuple[int, int]]:
    """(start, end) of each TFRecord in the file."""
    data, pos, out = path.read_bytes(), 0, []
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append((pos, pos + 12 + length + 4))
        pos += 12 + length + 4
    return out


def test_old_style_simple_values(tmp_path: Path) -> None:
    path = write(tmp_path, *[(step, [old("loss", 1.0 / (step + 1))]) for step in range(5)])
    assert read_events([path]) == {"loss": f32(0.2)}


def test_new_style_tensor_scalars_from_tensorboards_writer(tmp_path: Path) -> None:
    writer = Writer(str(tmp_path))  # tensorboard.summary.Writer: float32 rank-0 tensors, scalars metadata every time
    for step in range(4):
        writer.add_scalar("val/loss", 2.0 - step * 0.25, step)
        writer.add_scalar("val/acc", step * 0.2, step)
    writer.close()
    paths = find_event_files(tmp_path, DEFAULT_GLOB, Path("."), 0)
    assert read_events(paths) == {"val/loss": 1.25, "val/acc": f32(0.6)}


def test_new_style_tensor_encodings(tmp_path: Path) -> None:
    """Every way a rank-0 numeric tensor can hold its value; metadata only on a tag's first value (TF's writer)."""
    scalar_shape = tensor_shape_pb2.TensorShapeProto()
    path = write(
        tmp_path,
        (0, [new("double", 0.0, metadata=True), scalar_pb("v2", np.float32(9.0)).value[0]]),
        (1, [new("double", np.float64(0.1), metadata=False)]),  # double_val
        (1, [new("content", None, dtype=1, tensor_shape=scalar_shape, tensor_content=struct.pack("<f", 2.5))]),
        (1, [new("content64", None, dtype=2, tensor_shape=scalar_shape, tensor_content=struct.pack("<d", 0.3))]),
        (1, [new("half", np.float16(1.5))]),  # half_val
        (1, [new("int", np.int32(-7))]),  # int_val, a sign-extended varint
        (1, [new("int64", np.int64(1 << 40))]),  # int64_val
        (2, [scalar_pb("v2", np.float32(3.0)).value[0]]),  # tensorboard's own v2 scalar summary
    )
    # float_val not packed (a valid encoding protobuf's writers no longer choose): dtype, then key 0x2d + 4 bytes
    tensor = b"\x08\x01\x2d" + struct.pack("<f", 4.5)
    value = b"\x0a\x08unpacked" + b"\x42" + bytes([len(tensor)]) + tensor
    append_record(path, b"\x10\x01\x2a" + bytes([len(value) + 2]) + b"\x0a" + bytes([len(value)]) + value)
    assert read_events([path]) == {
        "double": 0.1, "v2": 3.0, "content": 2.5, "content64": 0.3, "half": 1.5, "int": -7.0,
        "int64": float(1 << 40), "unpacked": 4.5,
    }  # fmt: skip


def test_old_and_new_style_in_one_file_and_several_tags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        (0, [old("train/loss", 3.0), new("val/loss", np.float32(2.0)), old("lr", 0.1)]),  # one event, three values
        (1, [old("train/loss", 2.0)]),
        (1, [new("val/loss", np.float32(1.5)), new("val/top-1 ü", np.float32(0.75))]),
        (2, [old("train/loss", 1.0), old("lr", 0.01)]),
    )
    assert read_events([path]) == {"train/loss": 1.0, "val/loss": 1.5, "lr": f32(0.01), "val/top-1 ü": 0.75}


def test_agrees_with_tensorboards_event_accumulator(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rng = random.Random(1)
    events = [(step, [old("a", rng.random()), new("b", np.float32(rng.random()))]) for step in range(200)]
    path = write(tmp_path, *events, (200, [histogram_pb("h", np.arange(5.0)).value[0], text_pb("t", "note").value[0]]))
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    expected = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"]}
    expected["b"] = float(tensor_util.make_ndarray(acc.Tensors("b")[-1].tensor_proto))
    assert read_events([path]) == expected


def test_no_cap_on_points(tmp_path: Path) -> None:
    """25,000 points of one tag, more than EventAccumulator's default 10,000: the last one and every tag kept."""
    n = 25_000
    path = write(tmp_path, *[(step, [old("loss", step * 0.5)]) for step in range(n)], (n, [old("other", 1.0)]))
    start = time.perf_counter()
    assert read_events([path]) == {"loss": (n - 1) * 0.5, "other": 1.0}
    assert time.perf_counter() - start < 2  # ~0.1 s; generous for a loaded machine


def test_highest_step_wins_then_the_later_value(tmp_path: Path) -> None:
    first = write(tmp_path / "a", (5, [old("x", 5.0), old("y", 1.0)]), (3, [old("x", 3.0)]), (5, [old("y", 2.0)]))
    second = write(tmp_path / "b", (4, [old("x", 4.0)]), (5, [old("y", 3.0)]), (-1, [old("z", 1.0)]))
    # x: step 5 beats the later step 3 and step 4; y: equal steps, the later record, then the later file.
    assert read_events([first]) == {"x": 5.0, "y": 2.0}
    assert read_events([first, second]) == {"x": 5.0, "y": 3.0, "z": 1.0}
    assert read_events([second, first]) == {"x": 5.0, "y": 2.0, "z": 1.0}


def test_nan_and_inf_kept(tmp_path: Path) -> None:
    path = write(tmp_path, (0, [old("a", float("nan")), new("b", np.float32("inf")), old("c", float("-inf"))]))
    values = read_events([path])
    assert math.isnan(values["a"]) and values["b"] == math.inf and values["c"] == -math.inf


def test_non_scalar_summaries_ignored(tmp_path: Path) -> None:
    image = summary_pb2.Summary.Image(height=1, width=1, colorspace=3, encoded_image_string=b"\x89PNG...")
    histo = summary_pb2.HistogramProto(min=0, max=1, num=2, sum=1, sum_squares=1, bucket_limit=[1], bucket=[2])
    pr_curves = summary_pb2.SummaryMetadata.PluginData(plugin_name="pr_curves")
    other_plugin = summary_pb2.SummaryMetadata(plugin_data=pr_curves)
    path = write(
        tmp_path,
        (0, [summary_pb2.Summary.Value(tag="img", image=image), summary_pb2.Summary.Value(tag="hist", histo=histo)]),
        # a rank-2 and a string tensor
        (0, [histogram_pb("weights", np.arange(10.0)).value[0], text_pb("notes", "hello").value[0]]),
        (0, [new("vector", None, dtype=1, tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]), float_val=[1.0])]),  # rank 1, not a scalar
        (0, [summary_pb2.Summary.Value(tag="pr", metadata=other_plugin, tensor=tensor_util.make_tensor_proto(1.0))]),
        (1, [new("pr", np.float32(2.0), metadata=False)]),  # the tag's plugin (from its first value) still holds
        (1, [old("loss", 0.5)]),
    )
    append_record(path, event_pb2.Event(step=2, graph_def=b"\x0a\x03abc").SerializeToString())  # no summary
    assert read_events([path]) == {"loss": 0.5}


def test_cut_anywhere_yields_the_complete_records_before(tmp_path: Path) -> None:
    events = [(step, [old("loss", float(step)), new("acc", np.float32(step / 10))]) for step in range(6)]
    path = write(tmp_path, *events)
    data = path.read_bytes()
    spans = records(path)
    cut = tmp_path / "cut" / "events.out.tfevents.cut"
    cut.parent.mkdir()
    for size in range(len(data)):
        cut.write_bytes(data[:size])
        whole = sum(1 for _, end in spans if end <= size) - 1  # complete records after the file_version one
        expected = {"loss": float(whole - 1), "acc": f32((whole - 1) / 10)} if whole > 0 else {}
        assert read_events([cut]) == expected, size


def test_not_an_event_file(tmp_path: Path) -> None:
    garbage = tmp_path / "events.out.tfevents.garbage"
    garbage.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(MetricsError) as err:
        read_events([garbage])
    assert "not a TensorBoard event file" in str(err.value) and "\n" not in str(err.value)
    text = tmp_path / "events.out.tfevents.text"
    text.write_text("step=1 loss=0.5\n" * 10)
    with pytest.raises(MetricsError):
        read_events([text])
    empty = tmp_path / "events.out.tfevents.empty"  # created, nothing flushed yet
    empty.touch()
    assert read_events([empty]) == {}
    assert read_events([tmp_path / "events.out.tfevents.gone"]) == {}  # removed since it was found


def test_damage_inside_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, *[(step, [old("loss", float(step))]) for step in range(4)])
    data = bytearray(path.read_bytes())
    spans = records(path)
    start, end = spans[4]  # the last one (step 3): its data made unparseable, its framing kept
    data[start + 12 : end - 4] = b"\xff" * (end - 16 - start)
    path.write_bytes(data)
    assert read_events([path]) == {"loss": 2.0}
    start, _ = spans[2]  # step 1: a damaged length, so nothing after it can be framed
    data[start] ^= 0x01
    path.write_bytes(data)
    assert read_events([path]) == {"loss": 0.0}


def test_find_event_files(tmp_path: Path) -> None:
    root = tmp_path / "project"
    run_dir = root / "runs" / "r[1]"  # glob characters in the run directory are taken literally
    started = time.time()
    stale = write(run_dir, (0, [old("loss", 9.0)]))
    os.utime(stale, (started - 60, started - 60))  # left by an earlier run
    newer = write(run_dir / "tb" / "deep", (1, [old("loss", 2.0)]))
    older = write(run_dir / "tb", (0, [old("loss", 1.0), old("acc", 0.5)]))
    os.utime(older, (started + 1, started + 1))
    os.utime(newer, (started + 2, started + 2))
    (run_dir / "tb" / "notes.txt").write_text("not an event file")
    write(root / "runs" / "r1", (0, [old("loss", 7.0)]))  # what r[1] would match as a pattern
    write(tmp_path / "elsewhere", (0, [old("loss", 8.0)]))
    (run_dir / "tb" / "data").symlink_to(tmp_path / "elsewhere")  # `**` follows no link: not to a dataset,
    (run_dir / "tb" / "up").symlink_to(run_dir)  # nor round a loop

    assert find_event_files(root, DEFAULT_GLOB, run_dir, started) == [older, newer]  # absolute, oldest first
    assert find_event_files(root, DEFAULT_GLOB, Path("runs/r[1]"), started) == [older, newer]  # relative to root
    assert find_event_files(root, "{run_dir}/tb/events.out.tfevents.*", Path("runs/r[1]"), started) == [older]
    assert find_event_files(root, "runs/*/tb/**/events.*", Path("unused"), started) == [older, newer]
    assert find_event_files(root, DEFAULT_GLOB, run_dir, started + 1.5) == [newer]
    assert find_event_files(root, DEFAULT_GLOB, root / "missing", 0) == []
    assert read_events(find_event_files(root, DEFAULT_GLOB, run_dir, started)) == {"loss": 2.0, "acc": 0.5}
    assert read_events(find_event_files(root, DEFAULT_GLOB, run_dir, 0)) == {"loss": 2.0, "acc": 0.5}  # stale: step 0


def test_streams_in_bounded_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tracemalloc

    from ar.metrics import tensorboard

    monkeypatch.setattr(tensorboard, "CHUNK_SIZE", 1 << 12)
    path = write(tmp_path, *[(step, [old(f"tag{step % 3}", float(step))]) for step in range(20_000)])
    assert path.stat().st_size > 100 * tensorboard.CHUNK_SIZE
    tracemalloc.start()
    try:
        values = read_events([path])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert values == {"tag0": 19998.0, "tag1": 19999.0, "tag2": 19997.0}
    assert peak < 16 * tensorboard.CHUNK_SIZE  # ~18 KiB: a chunk or two and the per-tag state
