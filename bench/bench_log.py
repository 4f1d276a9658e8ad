"""Metric extraction from a large training log: `ar`'s streaming scan against a naive
read-everything approach, in the same run. Run: `uv run python bench/bench_log.py [--mb 1024]`.

Each reader runs in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BLOCK = "".join(
    f"[rank0]: epoch {e} step {s} loss={1.0 / (s + 1):.6f} lr: 3e-4 grad_norm=0.{s % 97:02d} throughput 1234.5 it/s\n"
    for e in range(2)
    for s in range(500)
) + "some progress bar text without metrics " * 20 + "\n"

STREAMING = """
import json, resource, sys, time
from pathlib import Path
from ar.metrics.log import scan_log
start = time.perf_counter()
found = scan_log(Path(sys.argv[1]))
print(json.dumps({"seconds": time.perf_counter() - start, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "metrics": found}))
"""

# What a first version of a metric reader usually does: read it all, decode, one regex over the text.
NAIVE = """
import json, re, resource, sys, time
from ar.metrics.log import DEFAULT_PATTERN
start = time.perf_counter()
text = "\\n" + open(sys.argv[1], encoding="utf-8", errors="replace").read()
found = {}
for match in re.finditer(DEFAULT_PATTERN, text):
    found[match.group("name")] = float(match.group("value"))
print(json.dumps({"seconds": time.perf_counter() - start, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "metrics": found}))
"""


def measure(script: str, log: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", script, str(log)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1024, help="log size in MiB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ar-bench-log-") as tmp:
        log = Path(tmp) / "run.log"
        block = BLOCK.encode()
        with open(log, "wb") as f:
            for _ in range(args.mb * 2**20 // len(block)):
                f.write(block)
            f.write(b"val_loss=0.4321\n")
        size_mb = os.path.getsize(log) / 2**20
        streaming = measure(STREAMING, log)
        naive = measure(NAIVE, log)
    assert streaming["metrics"] == naive["metrics"], "both readers must agree"
    print(f"## Log extraction, {size_mb:,.0f} MiB log\n")
    print("| reader | time | throughput | peak RSS |\n|---|---|---|---|")
    for name, row in (("ar streaming scan", streaming), ("naive read-all + regex", naive)):
        print(f"| {name} | {row['seconds']:.1f} s | {size_mb / row['seconds']:.0f} MiB/s | {row['peak_mb']:.0f} MB |")
    print(f"\nSame {len(streaming['metrics'])} metrics from both; val_loss = {streaming['metrics']['val_loss']}.")


if __name__ == "__main__":
    main()
