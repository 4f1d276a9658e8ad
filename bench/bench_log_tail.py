"""The log backend's backward read against the whole-log forward scan, in the same run.
Run: `uv run python bench/bench_log_tail.py [--mb 1024]`.

The log is training lines (the bench_log.py block, written a MiB at a time) with the run's final
metrics at the start of its last MiB, followed by a MiB of training lines. Three reads, each
in a fresh subprocess so its peak RSS is its own: the forward scan of every name (what `ar` did
before), the backward read of the wanted names, and the fallback, a wanted name the log never
shows (read backwards to the start). The log stays in the page cache: this times the scan, not a disk.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_log import BLOCK

WANTED = ["val_loss", "peak_mem_gb"]
BACKWARD_REPEATS = 5  # cheap, so the best of a few: one noisy start-up would be most of its time
FINAL = "[rank0]: eval val_loss=0.4321 val_acc: 0.873 peak_mem_gb=41.5\n"

# Bytes read come from Linux's /proc/self/io (rchar: every read() of the process, around the scan only).
READ = """
import json, resource, sys, time
from pathlib import Path
from ar.metrics.log import scan_log
def rchar():
    return int(next(line for line in open("/proc/self/io") if line.startswith("rchar")).split()[1])
names = json.loads(sys.argv[2])
before, start = rchar(), time.perf_counter()
found = scan_log(Path(sys.argv[1]), names=names)
seconds, read = time.perf_counter() - start, rchar() - before
print(json.dumps({"seconds": seconds, "read_mb": read / 2**20,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "metrics": found}))
"""


def write_log(path: Path, mb: int) -> None:
    block = BLOCK.encode() * (2**20 // len(BLOCK.encode()))  # whole training lines, just under 1 MiB
    with open(path, "wb") as f:
        for _ in range(mb * 2**20 // len(block)):
            f.write(block)
        f.write(FINAL.encode() + block)  # the last MiB opens with the final metrics


def measure(log: Path, names: list[str] | None) -> dict:
    done = subprocess.run([sys.executable, "-c", READ, str(log), json.dumps(names)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1024, help="log size in MiB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ar-bench-log-tail-") as tmp:
        log = Path(tmp) / "run.log"
        write_log(log, args.mb)
        size_mb = os.path.getsize(log) / 2**20
        forward = measure(log, None)
        backward = min((measure(log, WANTED) for _ in range(BACKWARD_REPEATS)), key=lambda row: row["seconds"])
        fallback = measure(log, [*WANTED, "never_logged"])
    for name in WANTED:
        assert backward["metrics"][name] == fallback["metrics"][name] == forward["metrics"][name], name
    assert fallback["metrics"] == forward["metrics"], "the fallback reads every name"
    print(f"## Log extraction from the end, {size_mb:,.0f} MiB log, metrics in its last MiB\n")
    print("| read | time | bytes read | peak RSS | names returned |\n|---|---|---|---|---|")
    rows = (("forward scan, every name (before)", forward), (f"backward, wanted {', '.join(WANTED)}", backward),
            ("backward fallback, a wanted name never logged", fallback))
    for name, row in rows:
        print(f"| {name} | {row['seconds']:.3f} s | {row['read_mb']:,.1f} MiB | {row['peak_mb']:.0f} MB "
              f"| {len(row['metrics'])} |")
    print(f"\nBackward read {forward['seconds'] / backward['seconds']:,.0f}x faster than the forward scan; "
          f"fallback / forward = {fallback['seconds'] / forward['seconds']:.2f}. Same values for {', '.join(WANTED)}.")


if __name__ == "__main__":
    main()
