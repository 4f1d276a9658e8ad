"""Only train.py may change between runs (SPEC §6): a fingerprint of everything else, taken
whenever `ar` itself has written, and compared by `ar run` before it launches.

The agent's shell can write anywhere; no hook can parse every way it might. So `ar` does not
trust what it finds: the best (best.json, the best run's snapshot and result, best_ckpt/meta.json),
the results log, the set of runs, and the host project's git-tracked files (HEAD, the index
and the content of files modified in the working tree) must be as `ar` left them. Untracked
files are a run's outputs and are not looked at. Cost: a few stats and hashes of small files,
plus one `git status` without untracked files (see BENCHMARKS.md).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from ar.durable import read_json_or_none, sha256_file, write_json_atomic
from ar.errors import ArError
from ar.layout import STATE_DIR, ExperimentPaths
from ar.state import load_state

_GIT_TIMEOUT = 30


VERSION = 1  # a seal of another version is taken again, never compared


def _digest(path: Path) -> str | None:
    """The content's sha256, read in chunks; a file that is not a readable regular file is
    described by its type and size instead (a FIFO is never opened). None when missing."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return f"not a file: mode {info.st_mode:o}"
    try:
        return sha256_file(path)
    except OSError:
        return f"unreadable: {info.st_size} bytes, mtime {info.st_mtime_ns}"


def fingerprint(paths: ExperimentPaths) -> dict:
    best = read_json_or_none(paths.best)
    best_run = paths.run(best["run_id"]) if isinstance(best, dict) and isinstance(best.get("run_id"), str) else None
    runs = sorted(os.listdir(paths.runs)) if paths.runs.is_dir() else []
    return {
        "best.json": _digest(paths.best),
        "best run's train.py": _digest(best_run.train_py) if best_run else None,
        "best run's result.json": _digest(best_run.result) if best_run else None,
        "best_ckpt/meta.json": _digest(paths.best_ckpt / "meta.json"),
        "results.tsv": _digest(paths.results),
        "runs/": f"{len(runs)} {runs[-1] if runs else ''}",
        "git": git_fingerprint(paths.root),
    }


def seal(paths: ExperimentPaths) -> None:
    """Record the fingerprint: called after every write `ar` makes outside train.py."""
    # without fsync: a seal lost with the machine is taken again by the next check, never refused
    write_json_atomic(paths.seal, {**fingerprint(paths), "last_run": load_state(paths).last_run, "version": VERSION}, sync=False)


def check_seal(paths: ExperimentPaths) -> None:
    """Refuse a run when anything but train.py changed since `ar` last wrote. A seal taken before
    the last recorded run (`ar` was killed between recording a run and sealing it) or missing
    (an experiment of an older version) is taken again instead."""
    recorded = read_json_or_none(paths.seal)
    last_run = load_state(paths).last_run
    if not isinstance(recorded, dict) or recorded.get("last_run") != last_run or recorded.get("version") != VERSION:
        if not isinstance(recorded, dict) and last_run:  # never silently: it may have been deleted
            print(f"ar: {paths.relative(paths.seal)} was missing; the experiment is accepted as it is now", file=sys.stderr)
        seal(paths)
        return
    now = fingerprint(paths)
    changed = [name for name in now if name != "git" and recorded.get(name) != now[name]]
    if changed:
        raise ArError(
            f"{', '.join(changed)} changed since the last run (only train.py may change between runs)",
            "undo that edit (results, best and runs are written only by ar); only a person may accept it as it is, "
            f"by deleting {paths.relative(paths.seal)}",
        )
    files = _git_changes(paths.root, recorded.get("git"), now["git"])
    if files:
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        raise ArError(
            f"git-tracked files of the project changed since the last run: {shown} (only train.py may change between runs)",
            f"restore them (`git checkout -- {files[0]}`, `git stash`); only a person may accept the change, by deleting {paths.relative(paths.seal)}",
        )


def _git_changes(root: Path, before: dict | None, now: dict | None) -> list[str]:
    """Tracked files whose content differs from what the seal recorded. A commit alone is no
    change: a file counts only if its content moved (in the working tree, or between the two
    HEADs for a file that was clean before)."""
    if before is None or now is None:
        return []  # not a git project (then or now): nothing to compare
    old, new = before.get("files", {}), now.get("files", {})
    changed = set()
    committed = _changed_between(root, before.get("head"), now.get("head")) if before.get("head") != now.get("head") else set()
    for path in old.keys() | new.keys() | committed:
        if path in old:
            # its content then is known: compare with the content now (clean now: new HEAD's)
            if new.get(path, _committed_digest(root, path)) != old[path]:
                changed.add(path)
        elif path in new or path in committed:
            changed.add(path)  # clean then, different now from the HEAD it was clean against
    return sorted(changed)


def _changed_between(root: Path, old_head: str | None, new_head: str | None) -> set[str]:
    git = shutil.which("git")
    if git is None or not old_head or not new_head:
        return {"HEAD (no commit to compare with)"}
    done = _git(git, root, "diff", "--name-only", "-z", old_head, new_head, "--", ".", f":(exclude){STATE_DIR}")
    if done is None:
        return {f"HEAD ({old_head[:8]} is no longer in the repository)"}
    return {name for name in done.decode("utf-8", "surrogateescape").split("\0") if name}


def _committed_digest(root: Path, path: str) -> str | None:
    """The digest of a file that is clean now: its working-tree content equals HEAD's."""
    top = _toplevel(shutil.which("git") or "git", root)
    return _digest(Path(top, path)) if top else None


def git_fingerprint(root: Path) -> dict | None:
    """HEAD, and for each tracked file that differs from HEAD (staged or not) its content digest;
    None outside a git work tree or without git. Files under .autoresearch/ are
    ar's own and are checked above."""
    git = shutil.which("git")
    if git is None or not _in_git_work_tree(root):
        return None
    out = _git(git, root, "status", "--porcelain=v2", "-z", "--branch", "--untracked-files=no",
               "--no-renames", "--ignore-submodules=all", "--", ".", f":(exclude){STATE_DIR}")
    if out is None:
        return None
    head, files, top = None, {}, None
    for entry in out.split(b"\0"):
        text = entry.decode("utf-8", "surrogateescape")
        if text.startswith("# branch.oid "):
            head = text.split()[2]
        elif text[:2] in ("1 ", "u "):
            fields = text.split(" ", 8 if text[0] == "1" else 10)
            path = fields[-1]
            if top is None:
                top = _toplevel(git, root)
            files[path] = _digest(Path(top, path)) if top else None
    return {"head": head, "files": files}


def _in_git_work_tree(root: Path) -> bool:
    for directory in (root, *root.parents):
        if (directory / ".git").exists():
            return True
    return False


def _toplevel(git: str, root: Path) -> str | None:
    out = _git(git, root, "rev-parse", "--show-toplevel")
    return out.decode("utf-8", "surrogateescape").strip() if out is not None else None


def _git(git: str, root: Path, *args: str) -> bytes | None:
    """stdout of a git command in the project; None when git fails or hangs."""
    try:
        done = subprocess.run([git, "-C", str(root), *args], capture_output=True, timeout=_GIT_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None
