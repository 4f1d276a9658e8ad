"""How soon the watchdog notices that a run ended, against waiting on the process directly.

Run: `uv run python bench/bench_exit.py [--repeats N]`. Each case runs `sleep S` under
`ar.watchdog.run_watched` (pidfd; RSS sampling every 0.2 s; optionally an nvidia-smi that never
answers) and, paired in the same loop, under `subprocess.run` (a blocking waitpid: the floor).
Reports the medians and the extra latency as a ratio of the run's length, so a loaded machine
moves both sides alike. The tests assert only orderings (tests/test_watchdog.py,
tests/test_resources.py); this is where the latency itself is measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ar import watchdog  # noqa: E402
from ar.watchdog import Launch, run_watched  # noqa: E402

HUNG_NVIDIA_SMI = "#!/bin/sh\nexec sleep 60\n"


def direct(seconds: float) -> float:
    started = time.perf_counter()
    subprocess.run(["/bin/sh", "-c", f"sleep {seconds}"], check=True)
    return time.perf_counter() - started


def watched(seconds: float, tmp: Path, path: str) -> float:
    run_dir = tmp / "run"
    run_dir.mkdir(exist_ok=True)
    env = {"PATH": path, "AR_RUN_DIR": str(run_dir)}
    launch = Launch(argv=["/bin/sh", "-c", f"sleep {seconds}"], cwd=tmp, env=env, log_path=tmp / "run.log",
                    seconds=60.0, grace=1.0, tag=("AR_RUN_DIR", str(run_dir)))
    started = time.perf_counter()
    outcome = run_watched(launch)
    assert outcome.status == "ok", outcome
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        hung = tmp / "bin"
        hung.mkdir()
        (hung / "nvidia-smi").write_text(HUNG_NVIDIA_SMI)
        (hung / "nvidia-smi").chmod(0o755)
        plain_path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if not os.path.exists(os.path.join(d, "nvidia-smi")))
        cases = [("exit at once", 0.0, plain_path), ("after 0.25 s (just past a sample)", 0.25, plain_path),
                 ("after 0.5 s, nvidia-smi hung", 0.5, f"{hung}{os.pathsep}{plain_path}")]
        watchdog._GPU_SECONDS = 0.1  # query often, so the hung query is always in flight at the exit
        print("| run | direct median | watched median | extra | extra / run length |")
        print("|---|---|---|---|---|")
        for name, seconds, path in cases:
            pairs = [(direct(seconds), watched(seconds, tmp, path)) for _ in range(args.repeats)]
            base = statistics.median(d for d, _ in pairs)
            mine = statistics.median(w for _, w in pairs)
            extra = statistics.median(w - d for d, w in pairs)
            ratio = f"{extra / seconds:.2f}" if seconds else "-"
            print(f"| {name} | {base * 1000:.1f} ms | {mine * 1000:.1f} ms | {extra * 1000:.1f} ms | {ratio} |")


if __name__ == "__main__":
    main()
