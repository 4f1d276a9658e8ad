"""Experiments per hour and slot idle time with 1, 2 and 4 slots, for the local backend and
(where a Slurm cluster runs, or can be started here as root) the Slurm backend. Run:
`uv run python bench/bench_slots.py [--runs 12] [--train 5] [--think 2] [--slots 1 2 4] [--slurm auto|on|off]`.

Every run is sleep-bound: train.py sleeps --train seconds and prints a random val_loss, so the
only limits are the slots and ar itself. A simulated agent thinks --think seconds before each
decision (an edit), as the real one reads lines and writes code between runs:
- 1 slot: think, `ar run` (blocks until the verdict), repeat: the slot idles while the agent thinks.
- N slots: think and `ar submit` until N are in flight, then `ar wait --any`, think, submit, ...
Each configuration finishes --runs runs (after a baseline that is not counted). Reported:
experiments/hour = runs / elapsed, the ratio against 1 slot of the same backend in the same
invocation, and the slot idle fraction = 1 - (sum of the runs' training seconds) / (N x elapsed).
For Slurm, the per-job overhead = (elapsed x N / runs) - train - think share, compared with local.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TRAIN_PY = """RUN_NOTE = {note!r}
import random, time
time.sleep({train})
print(f"val_loss={{random.random():.6f}}")
"""


def ar(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AR_")}
    done = subprocess.run([sys.executable, "-m", "ar", *args], cwd=root, env=env, capture_output=True, text=True, timeout=3600)
    if check and done.returncode not in (0, 4):
        raise SystemExit(f"ar {' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}")
    return done


def project(base: Path, name: str, train: float, slots: int, backend: str, partition: str | None) -> Path:
    root = base / name
    root.mkdir()
    ar(root, "init", "--example", "--expr", "bench", "--goal", "bench", "--primary-metric", "val_loss",
       "--primary-direction", "min", "--seconds", str(int(train * 4 + 30)))
    expr = root / ".autoresearch" / "bench"
    (expr / "train.py").write_text(TRAIN_PY.format(note="baseline", train=0))
    ar(root, "run")
    flags = ["--slots", str(slots), "--gpus-per-slot", "0", "--backend", backend]
    if partition:
        flags += ["--partition", partition]
    ar(root, "session", *flags)
    return root


def agent(root: Path, runs: int, train: float, think: float, slots: int) -> float:
    """Elapsed seconds for `runs` finished runs with a simulated agent."""
    train_py = root / ".autoresearch" / "bench" / "train.py"
    start = time.monotonic()
    finished = submitted = 0
    while finished < runs:
        if slots == 1:
            time.sleep(think)
            train_py.write_text(TRAIN_PY.format(note=f"try {submitted}", train=train))
            ar(root, "run", "--wait", "3600")
            submitted += 1
            finished += 1
            continue
        if submitted - finished < slots and submitted < runs:
            time.sleep(think)
            train_py.write_text(TRAIN_PY.format(note=f"try {submitted}", train=train))
            ar(root, "submit")
            submitted += 1
            continue
        ar(root, "wait", "--any", "--wait", "3600")
        finished += 1
    return time.monotonic() - start


def busy_seconds(root: Path) -> float:
    """Training seconds of the counted runs (the baseline excluded), from their result.json."""
    runs = sorted((root / ".autoresearch" / "bench" / "runs").iterdir())[1:]
    return sum(json.loads((r / "result.json").read_text())["wall_seconds"] for r in runs if (r / "result.json").exists())


def measure(base: Path, backend: str, slot_counts: list[int], runs: int, train: float, think: float, partition: str | None) -> list[dict]:
    rows = []
    for slots in slot_counts:
        root = project(base, f"{backend}-{slots}", train, slots, backend, partition)
        elapsed = agent(root, runs, train, think, slots)
        rows.append({"backend": backend, "slots": slots, "elapsed": elapsed, "per_hour": runs / elapsed * 3600,
                     "idle": 1 - busy_seconds(root) / (slots * elapsed)})
    one = next((r for r in rows if r["slots"] == 1), rows[0])
    for r in rows:
        r["ratio"] = r["per_hour"] / one["per_hour"]
    return rows


def slurm_partition(mode: str, workdir: Path):
    """A running cluster's default partition, or one started here (tests/slurm_cluster.py); None for off."""
    if mode == "off":
        return None, None
    if shutil.which("sbatch") and subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0:
        return "", None  # a cluster that already runs: its default partition
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from slurm_cluster import running_cluster  # needs root and Debian's slurm-wlm + munge

        workdir.mkdir()
        context = running_cluster(workdir)
        cluster = context.__enter__()
    except Exception as exc:  # noqa: BLE001 - reported, and the local numbers still stand
        if mode == "on":
            raise SystemExit(f"no Slurm cluster: {exc}")
        print(f"(slurm skipped: {exc})")
        return None, None
    os.environ.update(cluster.env)
    return cluster.partition, context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--train", type=float, default=5.0)
    parser.add_argument("--think", type=float, default=2.0)
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--slurm", choices=("auto", "on", "off"), default="auto")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-slots-"))
    rows = measure(base, "local", args.slots, args.runs, args.train, args.think, None)
    partition, cluster = slurm_partition(args.slurm, base / "slurm")
    try:
        if partition is not None:
            rows += measure(base, "slurm", args.slots, args.runs, args.train, args.think, partition or None)
    finally:
        if cluster is not None:
            cluster.__exit__(None, None, None)
    print(f"{args.runs} runs of {args.train:g}s training, {args.think:g}s agent think time per decision")
    print("| backend | slots | elapsed s | experiments/hour | vs 1 slot | slot idle |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['slots']} | {r['elapsed']:.1f} | {r['per_hour']:.0f} | {r['ratio']:.2f}x | {r['idle']:.0%} |")
    local = {r["slots"]: r for r in rows if r["backend"] == "local"}
    for r in rows:
        if r["backend"] == "slurm" and r["slots"] in local:
            extra = (r["elapsed"] - local[r["slots"]]["elapsed"]) * r["slots"] / args.runs
            print(f"slurm overhead per job at {r['slots']} slots: {extra:+.2f}s against local")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
