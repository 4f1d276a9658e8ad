"""The experiment's settings file, .ar-session.json: written only by `ar init` and `ar session`.

It carries a digest of its own content, so a hand edit (which the loop must never make) is
detected and refused instead of silently changing how runs are judged.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import orjson

from ar.constraints import Constraint, parse_constraint
from ar.durable import read_json, sha256, write_json_atomic
from ar.errors import ArError
from ar.layout import ExperimentPaths
from ar.termination import Limits

FORMAT = 1
DIRECTIONS = ("min", "max")
CHAIN_MODES = ("disabled", "max_n", "unlimited")
RESUME_MODES = ("continue", "revert-best", "fresh")
BACKENDS = ("local", "slurm")
DEFAULT_RUNNER = "{python} {train_py}"
MAX_SECONDS = 7 * 24 * 3600  # the longest time limit a run may have


class Experiment(NamedTuple):
    """Fixed at `ar init`: what is measured and how the training is launched."""

    slug: str
    goal: str
    primary_metric: str
    primary_direction: str
    runner: str = DEFAULT_RUNNER
    metric_backend: str = "log"
    log_pattern: str | None = None
    tb_events_glob: str | None = None  # relative to the project root; {run_dir} is the run's directory
    metrics_glob: str | None = None  # hf-trainer / lightning-csv: trainer_state.json or metrics.csv files, as above
    mlflow_tracking_uri: str | None = None  # mlflow: the store the training logs to (else $MLFLOW_TRACKING_URI, else the default)
    checkpoint_glob: str | None = None  # relative to the project root; {run_dir} allowed; else <run dir>/ckpt
    parent_slug: str | None = None  # chain children: the experiment this one follows
    parent_ckpt: str | None = None  # chain children: the parent's checkpoint, given to every run
    constraints: tuple[str, ...] = ()
    entry_pattern: str | None = None  # how train.py drives the host: argparse-cli, hydra, function, script (None: hand-written/example)
    entry: str | None = None  # the host's script (relative to the project root) or module:function
    mutation_scope: str = ""
    created_at: str = ""
    protected: dict = {}  # file name -> sha256 at init (prepare.py, program.md); never mutated

    def parsed_constraints(self) -> list[Constraint]:
        return [parse_constraint(c) for c in self.constraints]


class Loop(NamedTuple):
    """Changed with `ar session`: how long runs take and when the loop stops."""

    seconds: int
    max_runs: int | None = None
    plateau: int | None = None
    threshold: float | None = None
    max_failures: int | None = 5
    min_delta: float = 0.0  # a gain must exceed this (absolute) to advance: noise is not progress
    min_rel_delta: float = 0.0  # ... and this fraction of |best|
    chain_mode: str = "disabled"
    chain_max: int | None = None
    resume: str = "continue"
    baseline_acknowledged: bool = False
    baseline_repeats: int = 1  # the baseline runs this many times (new seeds): its spread is the noise
    noise_k: float = 2.0
    confirm: int = 0  # an apparent gain is re-run this many times; it advances only if the mean still wins  # once the spread is known, a gain must exceed noise_k * sigma too
    seconds_auto: bool = False  # the limit is 2x the baseline's wall time, `seconds` the cap
    prefer_simpler: bool = False  # a smaller train.py within the noise floor of the best advances
    max_changed_lines: int | None = None  # the mutation budget: lines a train.py may change against its restore target
    slots: int = 1  # runs in flight at once (`ar submit`); 1: one at a time, as `ar run`
    gpus_per_slot: int | None = None  # devices per slot in CUDA_VISIBLE_DEVICES; None: 1 with several slots
    backend: str = "local"  # where runs execute: local processes, or slurm jobs
    partition: str | None = None  # slurm: the partition jobs go to (None: the cluster's default)
    sbatch_args: str = ""  # slurm: more sbatch arguments, shell-quoted, e.g. "--gres=gpu:1 --mem=16G"


class Session(NamedTuple):
    experiment: Experiment
    loop: Loop

    def limits(self) -> Limits:
        loop = self.loop
        return Limits(self.experiment.primary_direction, loop.max_runs, loop.plateau, loop.threshold, loop.max_failures)

    def with_loop(self, **changes) -> "Session":
        return self._replace(loop=self.loop._replace(**changes))


def _digest(body: dict) -> str:
    return sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def save_session(path: Path, session: Session) -> None:
    body = {"format": FORMAT, "experiment": session.experiment._asdict(), "loop": session.loop._asdict()}
    write_json_atomic(path, {**body, "digest": _digest(body)})


def load_session(paths: ExperimentPaths) -> Session:
    if not paths.dir.is_dir():
        raise ArError(f"no experiment '{paths.slug}' in {paths.dir.parent}", "list them with `ar status`, or create one with `ar init`")
    fix = "settings change only through `ar session`; restore the file from a backup or create a new experiment with `ar init`"
    data = read_json(paths.session, fix)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArError(f"{paths.session.name} has an unknown format", fix)
    body = {k: v for k, v in data.items() if k != "digest"}
    if data.get("digest") != _digest(body):
        raise ArError(f"{paths.session.name} was edited by hand", "undo the edit; " + fix)
    try:
        experiment = _build(Experiment, data["experiment"])
        experiment = experiment._replace(constraints=tuple(experiment.constraints))
        return Session(experiment, _build(Loop, data["loop"]))
    except (KeyError, TypeError) as exc:
        raise ArError(f"{paths.session.name} is incomplete ({exc})", fix) from None


def _build(cls, data: dict):
    known = set(cls._fields)
    return cls(**{k: v for k, v in data.items() if k in known})
