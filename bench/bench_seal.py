"""What the change detection (ar/seal.py) costs `ar run`: the fingerprint taken before every
launch (and after every run), on a host project that is a git repository of N tracked files.

Run: `uv run python bench/bench_seal.py [--files 10000] [--repeats 15]`. Baseline in the same
run: `python -c pass` (one interpreter start, what any command costs at least).
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

from ar.layout import ExperimentPaths  # noqa: E402
from ar.seal import fingerprint  # noqa: E402


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@localhost", *args], cwd=root, check=True, capture_output=True)


def median_ms(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        root = Path(tmp_name) / "host"
        for i in range(args.files):
            path = root / f"pkg{i % 100}" / f"mod{i}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"X = {i}\n")
        subprocess.run([sys.executable, "-m", "ar", "init", "--example", "--expr", "bench", "--goal", "b", "--primary-metric", "val_loss",
                        "--primary-direction", "min"], cwd=root, check=True, capture_output=True)
        paths = ExperimentPaths(root, "bench")
        no_git = median_ms(lambda: fingerprint(paths), args.repeats)
        git(root, "init", "-q")
        git(root, "add", "-A", "--", ".", ":(exclude).autoresearch")
        git(root, "commit", "-qm", "host")
        fingerprint(paths)  # git refreshes its index stat cache once
        clean = median_ms(lambda: fingerprint(paths), args.repeats)
        for i in range(10):
            (root / f"pkg{i}" / f"mod{i}.py").write_text("X = 'edited'\n")
        dirty = median_ms(lambda: fingerprint(paths), args.repeats)
        python = median_ms(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), args.repeats)
    print(f"| host project | fingerprint median | `python -c pass` in the same run |")
    print("|---|---|---|")
    print(f"| not a git repository | {no_git:.1f} ms | {python:.1f} ms |")
    print(f"| git, {args.files:,} tracked files, clean | {clean:.1f} ms | |")
    print(f"| git, {args.files:,} tracked files, 10 modified | {dirty:.1f} ms | |")


if __name__ == "__main__":
    os.environ.pop("AR_PROJECT_ROOT", None)
    main()
