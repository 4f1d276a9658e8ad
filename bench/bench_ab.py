"""`ar run` of this tree against an earlier revision, paired in the same run.

Run: `uv run python bench/bench_ab.py --baseline-rev REV [--pairs 25]`. Checks REV out into a
temporary git worktree, syncs its runtime (no dev group), sets up one identical project for each
side, and alternates one `run` of each: the same 0.2 s train.py (it reverts after the first
run, so a restore is included). The difference of the medians is what the changes since REV
cost per iteration, on the same machine at the same moment.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRAIN = 'RUN_NOTE = "bench"\nimport time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 0.2:\n    pass\nprint("val_loss=0.5")\n'


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AR_") and k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}


def setup(cli: list[str], root: Path) -> None:
    root.mkdir()
    # Revisions before entry patterns wrote the toy train.py unasked; later ones need --example.
    # (asked in the project: `python -m ar` from another cwd could import that directory's ar)
    example = ["--example"] if "--example" in subprocess.run([*cli, "init", "--help"], cwd=root, env=env(), capture_output=True, text=True).stdout else []
    subprocess.run([*cli, "init", *example, "--expr", "bench", "--goal", "bench", "--primary-metric", "val_loss", "--primary-direction", "min",
                    "--seconds", "60"], cwd=root, env=env(), check=True, capture_output=True)
    subprocess.run([*cli, "session", "--unlimited", "--max-failures", "1000"], cwd=root, env=env(), check=True, capture_output=True)
    (root / ".autoresearch" / "bench" / "train.py").write_text(TRAIN)
    subprocess.run([*cli, "run"], cwd=root, env=env(), check=True, capture_output=True)  # sets the best


def timed(cli: list[str], root: Path) -> float:
    (root / ".autoresearch" / "bench" / "train.py").write_text(TRAIN)
    started = time.perf_counter()
    subprocess.run([*cli, "run"], cwd=root, env=env(), check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-rev", required=True)
    parser.add_argument("--pairs", type=int, default=25)
    args = parser.parse_args()
    uv = shutil.which("uv") or sys.exit("uv is not on PATH")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        old = tmp / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.baseline_rev], cwd=REPO, check=True, capture_output=True)
        try:
            subprocess.run([uv, "sync", "--quiet", "--no-dev"], cwd=old, env=env(), check=True)
            for tree in (old, REPO):
                subprocess.run([str(tree / ".venv" / "bin" / "python"), "-m", "compileall", "-q", str(tree / "ar")], check=True)
            sides = {"baseline": [str(old / ".venv" / "bin" / "python"), "-m", "ar"], "this tree": [sys.executable, "-m", "ar"]}
            for name, cli in sides.items():
                setup(cli, tmp / ("project-" + name.replace(" ", "-")))
            walls: dict[str, list[float]] = {name: [] for name in sides}
            for _ in range(args.pairs):
                for name, cli in sides.items():
                    walls[name].append(timed(cli, tmp / ("project-" + name.replace(" ", "-"))))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, check=False, capture_output=True)
    base, mine = (statistics.median(walls[n]) * 1000 for n in sides)
    deltas = sorted((b - a) * 1000 for a, b in zip(walls["baseline"], walls["this tree"]))
    print(f"| `ar run` at {args.baseline_rev} | this tree | difference (median of pairs) |")
    print("|---|---|---|")
    print(f"| {base:.0f} ms | {mine:.0f} ms | {statistics.median(deltas):+.1f} ms |")


if __name__ == "__main__":
    main()
