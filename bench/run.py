"""Benchmarks for `ar`'s per-iteration cost. Run: `uv run python bench/run.py [--quick]`.

Prints a Markdown report (copied into BENCHMARKS.md). Every figure is measured against a
baseline in the same run (paired), never as a fixed time: machines here are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AR = [str(Path(sys.executable).with_name("autoresearch"))]  # the console script uv installs
TRAIN = """RUN_NOTE = "bench"
import time
t = time.perf_counter()
while time.perf_counter() - t < 0.2:
    pass
print("val_loss=0.5")
"""


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AR_")}


# Spawns the measured command and reports its wall time and peak RSS. A small launcher, because a
# child's peak RSS counts the memory it shares before exec: this benchmark's own would show up.
LAUNCHER = """import os, sys, time
start = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
_, _, usage = os.wait4(pid, 0)
sys.stderr.write(f"{time.perf_counter() - start} {usage.ru_maxrss}")
"""


def timed(cmd: list[str], cwd: Path) -> tuple[float, int, bytes]:
    """Wall seconds and peak RSS (KiB) of cmd, and its stdout."""
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], cwd=cwd, env=env(), capture_output=True, check=True)
    wall, peak = done.stderr.decode().split()[-2:]
    return float(wall), int(peak), done.stdout


def init(root: Path) -> Path:
    subprocess.run([*AR, "init", "--example", "--expr", "bench", "--goal", "bench", "--primary-metric", "val_loss",
                    "--primary-direction", "min", "--seconds", "60"], cwd=root, env=env(), check=True, capture_output=True)
    subprocess.run([*AR, "session", "--unlimited", "--max-failures", "1000"], cwd=root, env=env(), check=True, capture_output=True)
    return root / ".autoresearch" / "bench"


def run_overhead(root: Path, pairs: int) -> dict:
    expr = init(root)
    (expr / "train.py").write_text(TRAIN)
    direct = [sys.executable, str(expr / "train.py")]
    timed([*AR, "run"], root)  # first run sets the best; the measured ones revert (restore included)
    deltas, ar_walls, direct_walls = [], [], []
    for _ in range(pairs):
        d, _, _ = timed(direct, root)
        a, _, _ = timed([*AR, "run"], root)
        direct_walls.append(d)
        ar_walls.append(a)
        deltas.append(a - d)
    return {
        "pairs": pairs,
        "direct_median_s": statistics.median(direct_walls),
        "ar_run_median_s": statistics.median(ar_walls),
        "overhead_median_ms": 1000 * statistics.median(deltas),
        "overhead_p90_ms": 1000 * sorted(deltas)[int(0.9 * (len(deltas) - 1))],
    }


def synthesize_history(expr: Path, runs: int) -> None:
    """A results.tsv of `runs` rows and a best run, as a long loop leaves them."""
    rows = ["run_id\tstarted_at\twall_s\tstatus\tverdict\tmetric\tvalue\tvalid\timproved\tnote"]
    for n in range(1, runs + 1):
        verdict = "advance" if n == 1 else ("crash" if n % 11 == 0 else "revert")
        status = "crash" if verdict == "crash" else "ok"
        value = "" if status == "crash" else f"{0.5 + (n % 7) / 100:.4f}"
        rows.append(f"r{n:04d}\t2026-11-22T00:00:00Z\t60.00\t{status}\t{verdict}\tval_loss\t{value}\t{str(status == 'ok').lower()}\t{str(n == 1).lower()}\ttry idea number {n}")
    (expr / "results.tsv").write_text("\n".join(rows) + "\n")
    snapshot = expr / "runs" / "r0001"
    snapshot.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(expr / "train.py", snapshot / "train.py")
    (expr / "best.json").write_text(json.dumps({"run_id": "r0001", "metric": "val_loss", "direction": "min", "value": 0.5,
                                               "checkpoint": None, "train_py": "runs/r0001/train.py"}))
    (expr / ".ar-state.json").unlink()


def status_scaling(base: Path, sizes: list[int], repeats: int) -> list[dict]:
    rows = []
    for runs in sizes:
        root = base / f"status-{runs}"
        root.mkdir()
        expr = init(root)
        synthesize_history(expr, runs)
        timed([*AR, "status"], root)  # rebuilds the counters once, as repair would
        walls, rss = [], []
        for _ in range(repeats):
            wall, peak, out = timed([*AR, "status", "--compact"], root)
            walls.append(wall)
            rss.append(peak)
        assert f"runs {runs}".encode() in out, out
        baseline = statistics.median(timed([sys.executable, "-c", "pass"], root)[0] for _ in range(repeats))
        shim = statistics.median(timed([sys.executable, ".autoresearch/ar.py", "status", "--compact"], root)[0] for _ in range(repeats))
        rows.append({"runs": runs, "median_ms": 1000 * statistics.median(walls), "python_startup_ms": 1000 * baseline,
                     "via_shim_ms": 1000 * shim,
                     "peak_rss_mb": max(rss) / 1024, "results_tsv_mb": (expr / "results.tsv").stat().st_size / 2**20})
    return rows


def bytes_per_iteration(root: Path, iterations: int) -> dict:
    """What the agent reads per steady-state iteration: `ar status --compact` + `ar run` output."""
    expr = init(root)
    subprocess.run([*AR, "session", "--max-runs", "50", "--plateau", "10", "--max-failures", "5"], cwd=root, env=env(), check=True, capture_output=True)
    status_bytes, run_bytes, result_bytes = [], [], []
    for n in range(iterations):
        text = (expr / "train.py").read_text()
        lr = 0.005 * (1.5 ** (n % 6))
        text = text.replace("LEARNING_RATE = ", f"LEARNING_RATE = {lr:.5f}  # was ", 1)
        text = text.replace(text.split("\n", 1)[0], f'RUN_NOTE = "learning rate {lr:.5f}, iteration {n}"', 1)
        (expr / "train.py").write_text(text)
        status_bytes.append(len(timed([*AR, "status", "--compact"], root)[2]))
        run_bytes.append(len(timed([*AR, "run"], root)[2]))
        result_bytes.append((expr / "runs" / f"r{n + 1:04d}" / "result.json").stat().st_size)
    steady = slice(1, None)
    s, r = statistics.median(status_bytes[steady]), statistics.median(run_bytes[steady])
    return {"iterations": iterations, "status_bytes": s, "run_bytes": r, "per_iteration_bytes": s + r,
            "result_json_bytes": statistics.median(result_bytes[steady])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI smoke)")
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "ar")], check=True)
    pairs, repeats = (5, 3) if args.quick else (25, 15)
    sizes = [100, 10_000] if args.quick else [100, 10_000, 100_000]
    with tempfile.TemporaryDirectory(prefix="ar-bench-") as tmp:
        base = Path(tmp)
        (base / "overhead").mkdir()
        (base / "bytes").mkdir()
        report = {
            "run_overhead": run_overhead(base / "overhead", pairs),
            "status": status_scaling(base, sizes, repeats),
            "bytes": bytes_per_iteration(base / "bytes", 8),
        }
    o = report["run_overhead"]
    print(f"## ar run overhead ({o['pairs']} pairs, train.py busy 0.2 s)\n")
    print("| direct median | ar run median | overhead median | overhead p90 |\n|---|---|---|---|")
    print(f"| {o['direct_median_s'] * 1000:.0f} ms | {o['ar_run_median_s'] * 1000:.0f} ms | {o['overhead_median_ms']:.0f} ms | {o['overhead_p90_ms']:.0f} ms |\n")
    print("## ar status --compact\n")
    print("| runs | results.tsv | median wall | via the shim | python -c pass | peak RSS |\n|---|---|---|---|---|---|")
    for row in report["status"]:
        print(f"| {row['runs']:,} | {row['results_tsv_mb']:.1f} MB | {row['median_ms']:.0f} ms | {row['via_shim_ms']:.0f} ms "
              f"| {row['python_startup_ms']:.0f} ms | {row['peak_rss_mb']:.0f} MB |")
    b = report["bytes"]
    print(f"\n## Bytes the agent reads per steady-state iteration ({b['iterations']} real iterations)\n")
    print("| ar status --compact | ar run | total | result.json (read only when needed) |\n|---|---|---|---|")
    print(f"| {b['status_bytes']:.0f} | {b['run_bytes']:.0f} | {b['per_iteration_bytes']:.0f} | {b['result_json_bytes']:.0f} |")
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
