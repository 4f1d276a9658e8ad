"""The tensorboard metric backend against a naive read-everything. Run: `uv run python bench/bench_tensorboard.py`.

Writes one event file of 100,000 scalars with TensorBoard's own writer (half old-style `simple_value`, half
new-style rank-0 tensors with the scalars plugin's metadata, as `tensorboard.summary.Writer` writes them),
then reads it, each read in a fresh interpreter, with:
  - ar:   `ar.metrics.tensorboard.read_events`
  - naive: TensorBoard's `EventAccumulator` with size_guidance {"scalars": 0, "tensors": 0} (keeps every
    point; its default keeps 10,000), `.Reload()`, then the last value of each tag.
Prints a Markdown table: median wall time of the read (imports excluded, shown apart), the process's peak RSS
(interpreter, imports and the read), the Python heap peak of the read alone (tracemalloc, a second read so
the timed one runs untraced), and whether each reader got the values written.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TAGS_OLD = ("train/loss", "train/lr")
TAGS_NEW = ("val/loss", "val/acc")

CHILD = r"""
import json, resource, sys, time, tracemalloc
t0 = time.perf_counter()
mode, path, trace = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if mode == "ar":
    from pathlib import Path
    from ar.metrics.tensorboard import read_events

    def read():
        return read_events([Path(path)])
else:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    def read():
        acc = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        tags = acc.Tags()
        out = {tag: acc.Scalars(tag)[-1].value for tag in tags["scalars"]}
        for tag in tags["tensors"]:
            out[tag] = tensor_util.make_ndarray(acc.Tensors(tag)[-1].tensor_proto).item()
        return out
import_s = time.perf_counter() - t0
t = time.perf_counter()
values = read()
read_s = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
heap = None
if trace:  # the heap peak does not vary between runs, and tracing slows EventAccumulator ~10x: once
    del values
    tracemalloc.start()
    values = read()
    heap = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
print(json.dumps({"import_s": import_s, "read_s": read_s, "rss_kib": rss, "heap": heap, "values": values}))
"""


def write_events(path: Path, n: int) -> dict[str, float]:
    """n scalars round-robin over the four tags, one event each (as add_scalar writes them); the last values."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    writer = EventFileWriter(str(path))
    meta = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DataClass.DATA_CLASS_SCALAR,
    )
    tags = TAGS_OLD + TAGS_NEW
    last: dict[str, float] = {}
    now = time.time()
    for i in range(n):
        tag, step = tags[i % len(tags)], i // len(tags)
        value = 1.0 / (1 + i)
        event = event_pb2.Event(wall_time=now + i * 1e-3, step=step)
        if tag in TAGS_OLD:
            event.summary.value.add(tag=tag, simple_value=value)
        else:
            tensor = tensor_util.make_tensor_proto(value, dtype="float32")
            event.summary.value.add(tag=tag, metadata=meta, tensor=tensor)
        writer.add_event(event)
        last[tag] = value
    writer.close()
    return last


def child(mode: str, path: Path, trace: bool) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), "1" if trace else "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp)
        written = write_events(logdir, args.points)
        (path,) = logdir.glob("events.out.tfevents.*")
        runs: dict[str, list[dict]] = {"ar": [], "naive": []}
        for i in range(args.repeat):  # interleaved, so drift on a noisy machine hits both alike
            for mode in runs:
                runs[mode].append(child(mode, path, trace=i == 0))
        size = path.stat().st_size
    import struct

    f32 = {tag: struct.unpack("<f", struct.pack("<f", v))[0] for tag, v in written.items()}
    print(f"{args.points:,} scalars, {len(written)} tags, one event file of {size / 1e6:.1f} MB; "
          f"median of {args.repeat} fresh interpreters\n")
    print("| reader | read time | import time | process peak RSS | heap peak of the read | last values right |")
    print("|---|---:|---:|---:|---:|---|")
    names = {"ar": "ar `read_events`", "naive": "EventAccumulator (keep all) + Reload"}
    def med(rs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rs)

    for mode, rs in runs.items():
        right = all(r["values"] == f32 for r in rs)
        print(f"| {names[mode]} | {med(rs, 'read_s') * 1000:.0f} ms | {med(rs, 'import_s') * 1000:.0f} ms | "
              f"{med(rs, 'rss_kib') / 1024:.0f} MiB | {rs[0]['heap'] / 2**20:.1f} MiB | {'yes' if right else 'NO'} |")
    agree = runs["ar"][0]["values"] == runs["naive"][0]["values"]
    speed = med(runs["naive"], "read_s") / med(runs["ar"], "read_s")
    print(f"\nBoth readers agree on every tag's last value: {'yes' if agree else 'NO'}; ar reads {speed:.1f}x faster.")


if __name__ == "__main__":
    main()
