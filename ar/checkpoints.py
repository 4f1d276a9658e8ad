"""A run's checkpoint: which one it is, its promotion to best_ckpt/, and deleting the others (SPEC §5.7).

Which one (at finalize, recorded in result.json as "checkpoint"):
- with --checkpoint-glob: the newest match, file or directory, written during this run: modified at
  or after the run started (a directory: every file in it; its own mtime only when it holds none), so
  a match left by an earlier run, or a directory still holding files of one, is never taken. Never a match: symlinks, ar's own files (.autoresearch/ but the checkpoint files in
  this run's directory) and a directory holding the project.
  Main rank: when matches carry a rank in their name (`rank0`, `rank_1`, `rank-2`, `-r3`, `_r0`; looked
  for in the part of the path the wildcards matched), only the lowest rank present counts (rank 0, the
  main process); matches without a rank always count.
- without it: <run dir>/ckpt ($AR_CKPT_DIR) when it holds something.

Promotion, on advance (`promote`; called again by repair from the result.json journal, so every step
first checks whether it already happened):
  1. stage   best_ckpt.staging/<name> = the checkpoint with every file hard-linked (copied only where
             the filesystem refuses a link: another filesystem), then meta.json LAST: it marks the
             stage complete. A stage without it is thrown away and built again.
  2. best.json -> the new run with checkpoint null, when it pointed at a checkpoint: from here on
             nothing points at the one being replaced (best.json's checkpoint, when not null, always
             names best_ckpt/ whose meta.json has the same run_id)
  3. rename best_ckpt -> best_ckpt.previous
  4. rename best_ckpt.staging -> best_ckpt
  5. best.json -> checkpoint "best_ckpt/<name>" (relative to the experiment directory)
  6. delete best_ckpt.previous, the previous best run's own copy, and this run's glob match when it lies
     outside its run directory: best_ckpt shares its inodes, and a later run that rewrites the same path
     in place must not change the best's bytes.
A run that advances without a checkpoint retires best_ckpt too: it belonged to an older train.py.
The checkpoint of a run that did not advance is deleted (`discard`).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from ar.best import load_best, promote_best
from ar.durable import read_json_or_none, write_json_atomic
from ar.errors import ArError
from ar.faults import crash_point
from ar.layout import CKPT_META, STATE_DIR, ExperimentPaths, RunPaths, split_glob
from ar.settings import Experiment

_RANK = re.compile(r"(?:(?<![a-z])rank[_-]?|(?<=[-_.])r)(\d+)(?![0-9a-z])", re.IGNORECASE)
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOTSUP}  # then copy


# ---------------------------------------------------------------- which checkpoint


def find_checkpoint(paths: ExperimentPaths, experiment: Experiment, run: RunPaths, started: float) -> str | None:
    """The run's checkpoint as recorded in result.json: relative to the project root, or absolute
    when it lies outside it; None when the run left none."""
    if not experiment.checkpoint_glob:
        return _recorded(paths, run.ckpt_dir) if _holds_something(run.ckpt_dir) else None
    base, rest = split_glob(paths.root, experiment.checkpoint_glob, run.dir)
    written = []
    for match in base.glob(rest) if rest else [base]:
        if match.is_symlink() or _foreign(paths, run, match):
            continue
        newest = _written_since(match, started)
        if newest is not None:
            rank = _RANK.search(os.path.relpath(match, base))
            written.append((newest, str(match), int(rank.group(1)) if rank else None))
    ranks = [rank for _, _, rank in written if rank is not None]
    kept = [w for w in written if w[2] is None or w[2] == min(ranks)] if ranks else written
    return _recorded(paths, Path(max(kept)[1])) if kept else None


def _holds_something(path: Path) -> bool:
    try:
        if path.is_dir():
            with os.scandir(path) as entries:
                return any(True for _ in entries)
        return path.stat().st_size > 0
    except OSError:
        return False


def _written_since(path: Path, started: float) -> float | None:
    """The newest mtime of `path` if all of it was written at or after `started`, else None.
    A directory counts by its files (saving again into an existing directory rewrites its files, not
    the directory's own mtime), and only whole: one older file and it is not this run's. The walk
    stops there, and never crosses into another filesystem (a mount point is never a checkpoint)."""
    try:
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode):
            return st.st_mtime if st.st_mtime >= started else None
        if os.path.ismount(path):
            return None
        newest, pending = None, [path]
        while pending:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    est = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(est.st_mode):
                        if est.st_dev != st.st_dev:
                            return None
                        pending.append(entry.path)
                    elif est.st_mtime < started:
                        return None
                    else:
                        newest = est.st_mtime if newest is None else max(newest, est.st_mtime)
    except OSError:  # gone since the listing, or unreadable: not this run's
        return None
    if newest is None:  # no file in it: the directory's own mtime says
        return st.st_mtime if st.st_mtime >= started else None
    return newest


def _foreign(paths: ExperimentPaths, run: RunPaths, path: Path) -> bool:
    """Never a run's checkpoint, so never promoted or deleted, whatever the glob says: ar's own files
    (.autoresearch/ but this run's directory; there, the files ar writes) and anything that holds the
    project (a glob like `*` or `/*` can match the project's own directory or one above it)."""
    real = os.path.realpath(path)
    if _within(os.path.realpath(paths.root), real):
        return True
    if not _within(real, os.path.realpath(paths.root / STATE_DIR)):
        return False
    own = (run.dir, run.train_py, run.log, run.result, run.outcome, run.process_log)
    return not _within(real, os.path.realpath(run.dir)) or real in {os.path.realpath(p) for p in own}


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _recorded(paths: ExperimentPaths, path: Path) -> str:
    relative = paths.relative(path)
    return str(path.resolve()) if relative == ".." or relative.startswith("../") else relative


def _source(paths: ExperimentPaths, result: dict) -> Path | None:
    recorded = result.get("checkpoint")
    return paths.root / recorded if recorded else None


def stored_name(recorded: str) -> str:
    """The checkpoint's name inside best_ckpt/ (its own name; meta.json is taken)."""
    name = Path(recorded).name
    return name if name != CKPT_META else f"ckpt-{name}"


# ---------------------------------------------------------------- promotion


def owner(directory: Path) -> str | None:
    """The run a complete best_ckpt (or staging) directory holds: meta.json is written last."""
    meta = read_json_or_none(directory / CKPT_META)
    return meta.get("run_id") if isinstance(meta, dict) else None


def best_pointer(paths: ExperimentPaths, run_id: str) -> str | None:
    """best.json's "checkpoint" for run_id: best_ckpt/<name> when best_ckpt holds that run."""
    meta = read_json_or_none(paths.best_ckpt / CKPT_META)
    if not isinstance(meta, dict) or meta.get("run_id") != run_id or not isinstance(meta.get("source"), str):
        return None
    return f"{paths.best_ckpt.name}/{stored_name(meta['source'])}"


def promote(paths: ExperimentPaths, result: dict) -> None:
    """Make the advanced run of `result` the best: best_ckpt/, best.json, then the deletions.
    Resumable after a kill at any step (see the module docstring)."""
    run_id = result["run_id"]
    source = _source(paths, result)
    if owner(paths.best_ckpt) != run_id:
        if source is not None and owner(paths.best_ckpt_staging) != run_id:
            source = _stage(paths, result, source)
        crash_point("after_stage")
        best = load_best(paths)
        if best is not None and best.get("checkpoint"):
            promote_best(paths, result, None)
        if paths.best_ckpt.exists():
            _remove(paths.best_ckpt_previous)
            os.rename(paths.best_ckpt, paths.best_ckpt_previous)
        crash_point("after_retire_old")
        if source is not None:
            os.rename(paths.best_ckpt_staging, paths.best_ckpt)
        crash_point("after_swap")
    pointer = best_pointer(paths, run_id)
    best = load_best(paths)
    if best is None or best["run_id"] != run_id or best.get("checkpoint") != pointer:
        promote_best(paths, result, pointer)
    crash_point("after_best_json")
    _remove(paths.best_ckpt_previous)
    _remove(paths.best_ckpt_staging)
    crash_point("after_drop_previous")
    previous = result.get("previous_best")
    if previous and previous["run_id"] != run_id:
        earlier = read_json_or_none(paths.run(previous["run_id"]).result)
        _drop_run_checkpoint(paths, earlier if isinstance(earlier, dict) else {"run_id": previous["run_id"]}, outside=False)
    if source is not None and pointer is not None:
        _drop_run_checkpoint(paths, result, outside=True, keep_run_dir=True)


def _stage(paths: ExperimentPaths, result: dict, source: Path) -> Path | None:
    """best_ckpt.staging/ built from scratch; None when the recorded checkpoint is gone (deleted by
    hand since): the run then advances without one."""
    from ar.text import utc_time

    staging = paths.best_ckpt_staging
    _remove(staging)
    if not os.path.lexists(source):
        return None
    staging.mkdir()
    tally = {"bytes": 0, "method": "link"}
    try:
        _link_tree(source, staging / stored_name(result["checkpoint"]), tally)
    except OSError as exc:
        raise ArError(
            f"cannot promote the checkpoint of {result['run_id']} ({exc})",
            f"fix the cause (disk space?), then run `ar status`: it finishes recording {result['run_id']}",
        ) from None
    meta = {"run_id": result["run_id"], "source": result["checkpoint"], "promoted_at": utc_time(), **tally}
    write_json_atomic(staging / CKPT_META, meta)  # last: the stage is complete
    return source


def _link_tree(src: Path, dst: Path, tally: dict) -> None:
    """dst = src without copying data: a file hard-linked, a directory recreated with every file
    hard-linked; copied only where the filesystem refuses a link (EXDEV: another filesystem)."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        dst.mkdir()
        with os.scandir(src) as entries:
            for entry in entries:
                _link_tree(Path(entry.path), dst / entry.name, tally)
    else:
        tally["bytes"] += src.stat().st_size
        try:
            os.link(src, dst)
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            import shutil  # here, not at the top: every command imports this module, shutil costs ~3 ms

            shutil.copy2(src, dst)
            tally["method"] = "copy"


# ---------------------------------------------------------------- deletions


def discard(paths: ExperimentPaths, result: dict) -> None:
    """A run that did not advance keeps no checkpoint: its run-dir ckpt and its glob match go."""
    _drop_run_checkpoint(paths, result, outside=True)


def _drop_run_checkpoint(paths: ExperimentPaths, result: dict, outside: bool, keep_run_dir: bool = False) -> None:
    """Delete a run's checkpoint: <run dir>/ckpt and the recorded one. Outside the run directory only
    with outside=True, i.e. for the glob match found for THIS run (an older run's recorded path may hold
    another run's file by now); never ar's own files."""
    run = paths.run(result["run_id"])
    source = _source(paths, result)
    if not keep_run_dir:
        _remove(run.ckpt_dir)
    if source is None:
        return
    real, run_dir = os.path.realpath(source), os.path.realpath(run.dir)
    if _within(real, run_dir):
        if not keep_run_dir:
            _remove(source)
    elif outside and not _foreign(paths, run, source):
        _remove(source)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    else:
        import shutil  # only when there is a directory to delete (see _link_tree)

        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- repair


def settle(paths: ExperimentPaths) -> None:
    """Swap leftovers once the journal has nothing pending (promotion finishes its own swap: `promote`
    is redone from result.json). If best.json points at best_ckpt but only best_ckpt.previous holds that
    run, it goes back; then the staging and previous directories are deleted."""
    if not (paths.best_ckpt_staging.exists() or paths.best_ckpt_previous.exists()):
        return
    best = load_best(paths)
    run_id = best["run_id"] if best and best.get("checkpoint") else None
    if run_id and owner(paths.best_ckpt) != run_id and owner(paths.best_ckpt_previous) == run_id:
        _remove(paths.best_ckpt)
        os.rename(paths.best_ckpt_previous, paths.best_ckpt)
    _remove(paths.best_ckpt_previous)
    _remove(paths.best_ckpt_staging)
