"""Checkpoint promotion against copying, in the same run. Run: `uv run python bench/bench_promote.py [--mb 1024]`.

A checkpoint of --mb MiB (one file, and a directory of 20 files) is promoted by `ar`'s own
`promote` (staging with hard links, meta.json, the swap, best.json, deleting the previous best's
copy) and copied with shutil.copy2 / shutil.copytree, with and without fsync. Median of --repeat.
Where /dev/shm is another filesystem, one more row: a glob match there, which promotion must copy.
Sources are written and synced before timing, so no copy reads or writes data still in flight.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ar.checkpoints import promote  # noqa: E402
from ar.layout import ExperimentPaths, format_run_id  # noqa: E402

FILES_IN_DIR = 20
BLOCK = 64 << 20


def write_checkpoint(path: Path, total: int, files: int) -> None:
    """`files` == 0: one file at `path`; else a directory of that many files (one nested)."""
    block = os.urandom(min(BLOCK, total))
    targets = [path] if files == 0 else [path / ("nested" if i == 0 else "") / f"part-{i:02d}.bin" for i in range(files)]
    share = total // len(targets)
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            left = share
            while left:
                n = min(left, len(block))
                f.write(block[:n])
                left -= n
    os.sync()


def link_copy(src: Path, dst: Path) -> None:
    """A fresh run's checkpoint with the master's bytes (hard links: making it costs nothing)."""
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=os.link)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dst)


def time_promotions(master: Path, repeat: int, where: Path, glob_dir: Path | None) -> tuple[list[float], str]:
    """Each promotion replaces the previous best, as in a real loop. The experiment lives under `where`;
    the checkpoint is its run's ckpt dir, or with `glob_dir` a glob match there."""
    with tempfile.TemporaryDirectory(prefix="ar-bench-expr-", dir=where) as tmp:
        paths = ExperimentPaths(Path(tmp), "bench")
        paths.runs.mkdir(parents=True)
        times, previous = [], None
        for number in range(1, repeat + 1):
            run = paths.run(format_run_id(number))
            run.dir.mkdir()
            if glob_dir is None:
                link_copy(master, run.ckpt_dir / master.name)
                recorded = paths.relative(run.ckpt_dir)
            else:
                source = glob_dir / f"{number}-{master.name}"
                link_copy(master, source)
                recorded = str(source)
            result = {"run_id": run.run_id, "checkpoint": recorded, "previous_best": previous,
                      "primary": {"name": "val_loss", "direction": "min", "value": 1.0 / number}}
            start = time.perf_counter()
            promote(paths, result)
            times.append(time.perf_counter() - start)
            previous = {"run_id": run.run_id, "value": 1.0 / number}
        method = (paths.best_ckpt / "meta.json").read_text().split('"method": "')[1].split('"')[0]
        return times, method


def time_copies(master: Path, repeat: int, fsync: bool) -> list[float]:
    times = []
    for _ in range(repeat):
        dst = master.with_name(master.name + ".copy")
        start = time.perf_counter()
        if master.is_dir():
            shutil.copytree(master, dst)
        else:
            shutil.copy2(master, dst)
        if fsync:
            for path in [dst] if dst.is_file() else [p for p in dst.rglob("*") if p.is_file()]:
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        times.append(time.perf_counter() - start)
        shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1024, help="checkpoint size in MiB")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    total = args.mb << 20
    rows = []
    with tempfile.TemporaryDirectory(prefix="ar-bench-promote-") as tmp:
        shm = Path("/dev/shm")
        cross = shm.is_dir() and shm.stat().st_dev != Path(tmp).stat().st_dev and shutil.disk_usage(shm).free > 2 * total
        for label, files in ((f"1 file, {args.mb} MiB", 0), (f"{FILES_IN_DIR} files, {args.mb} MiB", FILES_IN_DIR)):
            master = Path(tmp) / ("model.pt" if files == 0 else "hf-checkpoint")
            write_checkpoint(master, total, files)
            promoted, method = time_promotions(master, args.repeat, Path(tmp), None)
            copied = time_copies(master, args.repeat, fsync=False)
            synced = time_copies(master, args.repeat, fsync=True)
            rows.append((label, method, promoted, copied, synced))
            shutil.rmtree(master) if master.is_dir() else master.unlink()
        if cross:
            with tempfile.TemporaryDirectory(prefix="ar-bench-shm-", dir=shm) as shm_tmp:
                master = Path(shm_tmp) / "model.pt"
                write_checkpoint(master, total, 0)
                promoted, method = time_promotions(master, args.repeat, Path(tmp), Path(shm_tmp))
                copied = time_copies(master, args.repeat, fsync=False)
                synced = time_copies(master, args.repeat, fsync=True)
                rows.append((f"1 file, {args.mb} MiB, on /dev/shm (glob)", method, promoted, copied, synced))
    print(f"Checkpoint promotion vs copy (median of {args.repeat}; {sys.platform}, Python {sys.version.split()[0]})\n")
    print("| checkpoint | ar promotion | method | shutil copy | copy + fsync | copy / promotion |")
    print("|---|---|---|---|---|---|")
    for label, method, promoted, copied, synced in rows:
        p, c, s = (statistics.median(x) for x in (promoted, copied, synced))
        print(f"| {label} | {ms(p)} | {method} | {ms(c)} | {ms(s)} | {c / p:,.0f}x |")


if __name__ == "__main__":
    main()
