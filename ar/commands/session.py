"""`ar session`: show or set the loop settings; the only writer of .ar-session.json after init."""

from __future__ import annotations

import math
import os
import shlex
import shutil
import subprocess

import orjson

from ar.best import load_best, restore_train_py
from ar.errors import ArError
from ar.experiments import resolve_experiment
from ar.layout import ExperimentPaths
from ar.slots import idle_books
from ar.settings import BACKENDS, CHAIN_MODES, MAX_SECONDS, RESUME_MODES, Session, load_session, save_session
from ar.state import load_state, save_state
from ar.wipe import wipe


def session_command(expr: str | None, as_json: bool, **flags) -> int:
    paths = resolve_experiment(expr)
    session = load_session(paths)
    changed = _apply_flags(session, flags)
    if flags["resume"] is not None:
        _resume(paths, flags["resume"])
    if any(getattr(changed.loop, key) != getattr(session.loop, key) for key in SLOT_SETTINGS):
        _check_gpus(changed)
        _check_idle(paths)  # slots and backend change only between runs
    if changed != session:
        save_session(paths.session, changed)
    if flags["chain_mode"] is not None or flags["chain_max"] is not None:
        from ar import chain

        chain.sync_session(paths, session.loop, changed.loop)  # the chain's budget, .chain-session.json
    if as_json:
        print(orjson.dumps({"experiment": changed.experiment._asdict(), "loop": changed.loop._asdict()}).decode())
    else:
        print("\n".join(describe(changed)))
    return 0


def _positive(flag: str, value, upper: int | None = None):
    if value is not None and (value < 1 or (upper is not None and value > upper)):
        raise ArError(f"--{flag} {value} is out of range", f"give a whole number from 1{f' to {upper}' if upper else ''}")
    return value


MAX_REPEATS = 20


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ArError(f"--seconds {text!r} is not a number of seconds", "give whole seconds, e.g. --seconds 600, or --seconds auto") from None


def _apply_flags(session: Session, f: dict) -> Session:
    loop = session.loop
    changes = {}
    if f["seconds"] is not None:
        if f["seconds"].strip().lower() == "auto":
            changes["seconds_auto"] = True  # the current limit stays, as the cap
        else:
            changes.update(seconds=_positive("seconds", _whole(f["seconds"]), MAX_SECONDS), seconds_auto=False)
    for flag, key in (("max_runs", "max_runs"), ("plateau", "plateau"), ("max_failures", "max_failures"), ("chain_max", "chain_max")):
        if f[key] is not None:
            changes[key] = _positive(flag.replace("_", "-"), f[key])
    if f["threshold"] is not None:  # finite: the CLI refuses NaN and inf for every float flag
        changes["threshold"] = f["threshold"]
    for key, upper in (("min_delta", math.inf), ("min_rel_delta", 1.0)):
        value = f[key]
        if value is not None:
            if not (math.isfinite(value) and 0 <= value < upper):
                raise ArError(f"--{key.replace('_', '-')} {value} is out of range", "give 0 (strictly better) or a small positive gain, e.g. 0.001")
            changes[key] = value
    if f["unlimited"]:
        if any(k in changes for k in ("max_runs", "plateau", "threshold")):
            raise ArError("--unlimited clears --max-runs, --plateau and --threshold", "give either --unlimited or those limits")
        changes.update(max_runs=None, plateau=None, threshold=None)
    if f["chain_mode"] is not None:
        if f["chain_mode"] not in CHAIN_MODES:
            raise ArError(f"--chain-mode {f['chain_mode']!r} is unknown", f"use one of: {', '.join(CHAIN_MODES)}")
        changes["chain_mode"] = f["chain_mode"]
    if changes.get("chain_mode", loop.chain_mode) == "max_n" and changes.get("chain_max", loop.chain_max) is None:
        raise ArError("--chain-mode max_n needs a number of follow-up experiments", "add --chain-max N")
    if f["resume"] is not None:
        if f["resume"] not in RESUME_MODES:
            raise ArError(f"--resume {f['resume']!r} is unknown", f"use one of: {', '.join(RESUME_MODES)}")
        if f["resume"] == "fresh" and not f["yes"]:
            raise ArError("--resume fresh deletes every run and the best", "add --yes to confirm")
        changes["resume"] = f["resume"]
    if f["max_changed_lines"] is not None:
        if f["max_changed_lines"] < 0:
            raise ArError(f"--max-changed-lines {f['max_changed_lines']} is out of range", "give the lines one run may change, e.g. 20 (0: no limit)")
        changes["max_changed_lines"] = f["max_changed_lines"] or None
    if f["baseline_repeats"] is not None:
        changes["baseline_repeats"] = _positive("baseline-repeats", f["baseline_repeats"], MAX_REPEATS)
    if f["confirm"] is not None:
        if not 0 <= f["confirm"] <= MAX_REPEATS:
            raise ArError(f"--confirm {f['confirm']} is out of range", f"give 0 (off) to {MAX_REPEATS} confirmation runs, e.g. 2")
        changes["confirm"] = f["confirm"]
    if f["noise_k"] is not None:
        if not 0 <= f["noise_k"] <= 10:
            raise ArError(f"--noise-k {f['noise_k']} is out of range", "give 0 to 10 (2: gains beyond two standard deviations of the noise)")
        changes["noise_k"] = f["noise_k"]
    if f["prefer_simpler"] is not None:
        if f["prefer_simpler"] not in ("on", "off"):
            raise ArError(f"--prefer-simpler {f['prefer_simpler']!r} is not on or off", "give --prefer-simpler on (or off)")
        changes["prefer_simpler"] = f["prefer_simpler"] == "on"
    changes.update(_slot_changes(f))
    if f["ack_baseline"]:
        changes["baseline_acknowledged"] = True
    if f["runner"] is not None:
        if not f["runner"].strip():
            raise ArError("--runner is empty", "give the launch command, e.g. --runner 'torchrun --nproc-per-node 2 {train_py}'")
        session = session._replace(experiment=session.experiment._replace(runner=f["runner"]))
    return session.with_loop(**changes) if changes else session


MAX_SLOTS = 64
SLOT_SETTINGS = ("slots", "gpus_per_slot", "backend", "partition", "sbatch_args")


def _slot_changes(f: dict) -> dict:
    changes = {}
    if f["slots"] is not None:
        changes["slots"] = _positive("slots", f["slots"], MAX_SLOTS)
    if f["gpus_per_slot"] is not None:
        if not 0 <= f["gpus_per_slot"] <= 64:
            raise ArError(f"--gpus-per-slot {f['gpus_per_slot']} is out of range", "give the GPUs each run gets, e.g. 1 (0: leave CUDA_VISIBLE_DEVICES alone)")
        changes["gpus_per_slot"] = f["gpus_per_slot"]
    if f["backend"] is not None:
        if f["backend"] not in BACKENDS:
            raise ArError(f"--backend {f['backend']!r} is unknown", f"use one of: {', '.join(BACKENDS)}")
        if f["backend"] == "slurm" and shutil.which("sbatch") is None:
            raise ArError("--backend slurm needs sbatch, which is not on PATH", "run ar on a Slurm login node (or install Slurm's client tools), or keep --backend local")
        changes["backend"] = f["backend"]
    if f["partition"] is not None:
        changes["partition"] = f["partition"].strip() or None
    if f["sbatch_args"] is not None:
        try:
            shlex.split(f["sbatch_args"])
        except ValueError as exc:
            raise ArError(f"--sbatch-args cannot be parsed ({exc})", "quote it as a shell would, e.g. --sbatch-args '--gres=gpu:1 --mem=16G'") from None
        changes["sbatch_args"] = f["sbatch_args"].strip()
    return changes


def _check_gpus(session: Session) -> None:
    """Refuse more slots x GPUs than this machine shows (none shown: nothing to check)."""
    from ar.launch import slot_gpus

    loop = session.loop
    per_slot = slot_gpus(session)
    gpus = visible_gpus() if loop.backend == "local" and per_slot else 0
    if gpus and loop.slots * per_slot > gpus:
        raise ArError(f"{loop.slots} slots x {per_slot} GPUs need {loop.slots * per_slot} GPUs; {gpus} are visible",
                      f"use --slots {max(1, gpus // per_slot)}, or set --gpus-per-slot")


def _check_idle(paths: ExperimentPaths) -> None:
    with idle_books(paths):
        pass


def visible_gpus() -> int:
    """GPUs this machine shows (CUDA_VISIBLE_DEVICES narrows them); 0 without nvidia-smi."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def _resume(paths: ExperimentPaths, mode: str) -> None:
    """Apply a resume choice; it touches runs and train.py, so no run may be in flight."""
    with idle_books(paths):
        if mode == "fresh":
            wipe(paths)
            return
        if mode == "revert-best":
            restore_train_py(paths, load_best(paths))
        state = load_state(paths)
        if state.manual_stop:
            save_state(paths, state._replace(manual_stop=False))


def describe(session: Session) -> list[str]:
    e, loop = session.experiment, session.loop
    return [
        f"expr {e.slug}: {e.primary_direction} {e.primary_metric} via {e.metric_backend}; runner {e.runner}",
        f"seconds {'auto (2x the baseline), at most ' if loop.seconds_auto else ''}{loop.seconds}, max_runs {loop.max_runs}, plateau {loop.plateau}, threshold {loop.threshold}, max_failures {loop.max_failures}",
        f"min_delta {loop.min_delta:g}, min_rel_delta {loop.min_rel_delta:g}, max_changed_lines {loop.max_changed_lines}, baseline_repeats {loop.baseline_repeats}, confirm {loop.confirm}, noise_k {loop.noise_k:g}, prefer_simpler {str(loop.prefer_simpler).lower()}",
        f"chain_mode {loop.chain_mode}, chain_max {loop.chain_max}, resume {loop.resume}, baseline_acknowledged {str(loop.baseline_acknowledged).lower()}",
        f"slots {loop.slots}, gpus_per_slot {loop.gpus_per_slot}, backend {loop.backend}"
        + (f", partition {loop.partition}, sbatch_args {loop.sbatch_args!r}" if loop.backend == "slurm" else ""),
    ]
