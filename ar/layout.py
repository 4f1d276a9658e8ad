"""Every file name of a project and an experiment, in one place.

No other module builds a path by hand: they ask ProjectPaths / ExperimentPaths / RunPaths.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple
from pathlib import Path

from ar.errors import ArError

STATE_DIR = ".autoresearch"
SLUG_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
RUN_ID_RE = re.compile(r"r(\d{4,})")


def format_run_id(number: int) -> str:
    return f"r{number:04d}"


def run_number(run_id: str) -> int | None:
    """The number of a run id (r0042 -> 42); None for anything else (a damaged row, a stray name)."""
    match = RUN_ID_RE.fullmatch(run_id)
    return int(match.group(1)) if match else None


def parse_run_id(run_id: str) -> int:
    number = run_number(run_id)
    if number is None:
        raise ArError(f"'{run_id}' is not a run id", "run ids look like r0001")
    return number


def check_slug(slug: str) -> str:
    if not SLUG_RE.fullmatch(slug):
        raise ArError(
            f"experiment slug {slug!r} is not allowed",
            "use 1-64 chars of a-z, 0-9, '-', '_', starting with a letter or digit, e.g. 261122-lr-warmup",
        )
    return slug


CKPT_META = "meta.json"  # in best_ckpt/: {run_id, source, promoted_at, bytes, method}
_GLOB_MAGIC = re.compile(r"[*?[]")


def split_glob(root: Path, pattern: str, run_dir: Path) -> tuple[Path, str]:
    """A user glob (relative to the project root `root`, or absolute; `{run_dir}` is the run's directory)
    as (literal base directory, wildcard rest for Path.glob; "" when the pattern has no wildcard).
    The leading components without wildcards are taken literally, so a run directory named `r[1]`
    stays itself, and the rest is matched by pathlib, whose `**` does not follow symlinks."""
    parts = pattern.split("/")
    literal = 0
    while literal < len(parts) and not _GLOB_MAGIC.search(parts[literal].replace("{run_dir}", "")):
        literal += 1
    head = "/".join(parts[:literal]) or ("/" if pattern.startswith("/") else "")  # "/*/x": the base is "/"
    base = root / head.replace("{run_dir}", os.fspath(run_dir))
    escaped = _GLOB_MAGIC.sub(r"[\g<0>]", os.fspath(run_dir))
    return base, "/".join(parts[literal:]).replace("{run_dir}", escaped)


class RunPaths(NamedTuple):
    run_id: str
    dir: Path

    @property
    def train_py(self) -> Path:
        return self.dir / "train.py"

    @property
    def log(self) -> Path:
        return self.dir / "run.log"

    @property
    def result(self) -> Path:
        return self.dir / "result.json"

    @property
    def ckpt_dir(self) -> Path:
        return self.dir / "ckpt"  # AR_CKPT_DIR: where train.py saves its checkpoint

    @property
    def outcome(self) -> Path:
        return self.dir / ".ar-outcome.json"  # the watchdog's outcome, saved as the training ends

    @property
    def process_log(self) -> Path:
        return self.dir / ".ar-processes"  # "pid start" of every process of the run the supervisor saw

    @property
    def submitted(self) -> Path:
        return self.dir / ".ar-submitted"  # made by `ar submit`: train.py was restored at once, not after the run

    @property
    def shown(self) -> Path:
        return self.dir / ".ar-shown"  # its `ar run` printed its verdict: `ar wait --any` skips it

    @property
    def job(self) -> Path:
        return self.dir / ".ar-job.json"  # the Slurm backend's job id, written as the job is submitted

    @property
    def group(self) -> Path:
        return self.dir / "group.json"  # a repeat of the baseline: {"kind", "of", "index", "size"}


class ExperimentPaths:
    """Files of one experiment, .autoresearch/<slug>/."""

    def __init__(self, root: Path, slug: str, directory: Path | None = None):
        self.root = root  # the project root (holds .autoresearch/)
        self.slug = slug
        self.dir = d = directory or root / STATE_DIR / slug  # `directory`: a staging place for `ar init`
        self.program_md = d / "program.md"
        self.prepare_py = d / "prepare.py"
        self.train_py = d / "train.py"
        self.baseline_py = d / "train.py.baseline"  # train.py as the first run took it: restore target before any best
        self.session = d / ".ar-session.json"  # settings, written only by `ar init` and `ar session`
        self.state = d / ".ar-state.json"  # counters after the last finished run, written only by `ar run`
        self.best = d / "best.json"
        self.best_ckpt = d / "best_ckpt"  # the best run's checkpoint + meta.json (written last: marks it complete)
        self.best_ckpt_staging = d / "best_ckpt.staging"  # the next best_ckpt, built before the swap
        self.best_ckpt_previous = d / "best_ckpt.previous"  # the old best_ckpt during the swap
        self.results = d / "results.tsv"
        self.chain_decision = d / "chain_decision.json"
        self.runs = d / "runs"
        self.lock = d / ".ar-lock"  # flock of slot 1: held by the supervisor of the run on it
        self.active = d / ".ar-active.json"  # which run slot 1's supervisor is running
        self.books_lock = d / ".ar-books.lock"  # flock held briefly by whoever writes the books (runs, rows, best)
        self.queue = d / ".ar-queue.json"  # submitted runs waiting for a free slot, oldest first
        self.reported = d / ".ar-reported.json"  # how far `ar wait --any` has reported results.tsv
        self.seal = d / ".ar-seal.json"  # what everything but train.py looked like when ar last wrote
        self.wipe_marker = d / ".ar-wipe"  # `--resume fresh` under way: finished by whoever comes next
        self.wipe_trash = d / ".ar-wipe-trash"  # what that wipe removes, renamed here first
        self.unclean = d / ".ar-unclean"  # processes survived SIGKILL: no run until they are gone
        self.supervisor_log = d / ".ar-supervisor.log"  # stderr of the supervisor, for bugs in ar itself

    def run(self, run_id: str) -> RunPaths:
        return RunPaths(run_id, self.runs / run_id)

    def slot_lock(self, index: int) -> Path:
        """flock held by the supervisor running on slot `index` (0-based; slot 0 is `ar run`'s lock)."""
        return self.lock if index == 0 else self.dir / f".ar-slot-{index + 1}.lock"

    def slot_record(self, index: int) -> Path:
        """Which run slot `index`'s supervisor runs: run_id, pids, start, budget."""
        return self.active if index == 0 else self.dir / f".ar-slot-{index + 1}.json"

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.root)


class ProjectPaths(NamedTuple):
    root: Path

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def shim(self) -> Path:
        return self.state_dir / "ar.py"

    @property
    def gitignore(self) -> Path:
        return self.state_dir / ".gitignore"

    @property
    def chain_session(self) -> Path:
        return self.state_dir / ".chain-session.json"

    def experiment(self, slug: str) -> ExperimentPaths:
        return ExperimentPaths(self.root, check_slug(slug))

    def experiments(self) -> list[str]:
        if not self.state_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.state_dir.iterdir() if SLUG_RE.fullmatch(p.name) and (p / ".ar-session.json").is_file()
        )


def find_project(start: Path | None = None) -> ProjectPaths:
    """The project root: $AR_PROJECT_ROOT (set by the shim), else the nearest ancestor holding .autoresearch/."""
    env_root = os.environ.get("AR_PROJECT_ROOT")
    if env_root:
        return ProjectPaths(Path(env_root).resolve())
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / STATE_DIR).is_dir():
            return ProjectPaths(candidate)
    raise ArError("no .autoresearch/ here or in any parent directory", "run `ar init` in the project root first")
