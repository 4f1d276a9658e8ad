"""What `uv run` costs per command, with and without `compile-bytecode = true` in [tool.uv].

Run: `uv run python bench/bench_uv_run.py [--repeats N]`. Builds two copies of the tracked
tree in a temp dir, identical but for that setting ("before" has it, as the repository did),
syncs each (dev group included, as `uv run` in a clone does; a third copy without the setting is
synced once with `uv sync --compile-bytecode`, the advice for machines that set
PYTHONDONTWRITEBYTECODE=1, as ours do), then times, alternating:
`uv run autoresearch --help` in the copy, the setup skill's form
`uv run --quiet --no-dev --project <copy> autoresearch --help` from another directory, and the
console script itself (`.venv/bin/autoresearch --help`), the floor.
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
UV = shutil.which("uv") or sys.exit("uv is not on PATH")


def copy(dest: Path, compile_bytecode: bool) -> Path:
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    if compile_bytecode:
        with open(dest / "pyproject.toml", "a") as f:
            f.write("\n[tool.uv]\ncompile-bytecode = true\n")
    return dest


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT") and not k.startswith("AR_")}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        elsewhere = tmp / "project"
        elsewhere.mkdir()
        trees = {"before": copy(tmp / "before", True), "after": copy(tmp / "after", False),
                 "compiled": copy(tmp / "compiled", False)}
        for label, tree in trees.items():
            subprocess.run([UV, "sync", "--quiet", *(["--compile-bytecode"] if label == "compiled" else [])], cwd=tree, env=env, check=True)
        forms = {
            "`uv run autoresearch --help` (in the clone)": lambda t: ([UV, "run", "autoresearch", "--help"], t),
            "`uv run --quiet --no-dev --project <clone> autoresearch --help` (setup skill)":
                lambda t: ([UV, "run", "--quiet", "--no-dev", "--project", str(t), "autoresearch", "--help"], elsewhere),
            "`.venv/bin/autoresearch --help` (no uv)": lambda t: ([str(t / ".venv" / "bin" / "autoresearch"), "--help"], t),
        }
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeats):
            for form, build in forms.items():
                for label, tree in trees.items():
                    argv, cwd = build(tree)
                    times.setdefault((form, label), []).append(timed(argv, cwd, env))
        print("| command | before (compile-bytecode = true) | after | after, compiled once | before / after |")
        print("|---|---|---|---|---|")
        for form in forms:
            before, after, compiled = (statistics.median(times[(form, label)]) for label in trees)
            print(f"| {form} | {before * 1000:.0f} ms | {after * 1000:.0f} ms | {compiled * 1000:.0f} ms | {before / after:.2f}x |")


if __name__ == "__main__":
    main()
