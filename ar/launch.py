"""What a run launches and with which environment, and the watchdog call (SPEC §5.5)."""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from collections.abc import Callable

from ar.layout import ExperimentPaths, RunPaths, run_number
from ar.settings import Session

GRACE_SECONDS = 10
DISTRIBUTED_GRACE_SECONDS = 30  # launchers need time to tear down workers and free GPU memory
_SHELL_SYNTAX = re.compile(r"[|&;<>()$`*?\[\]{}~!#\n]|^\s*\w+=")  # pipes, globs, env assignments, ...
_DISTRIBUTED = re.compile(r"\b(torchrun|accelerate|deepspeed|torch\.distributed)\b")


def project_python() -> str:
    """The project's interpreter: the one the shim was started with, else ar's own."""
    return os.environ.get("AR_PROJECT_PYTHON") or sys.executable


def launch_command(paths: ExperimentPaths, session: Session, run: RunPaths) -> str:
    """The runner with {train_py} = the run's own snapshot: editing the next candidate, or a
    restore, never changes the code of a run that is going on."""
    python = project_python()
    runner = session.experiment.runner
    return runner.replace("{python}", shlex.quote(python)).replace("{train_py}", shlex.quote(paths.relative(run.train_py)))


def launch_argv(command: str) -> list[str]:
    """A plain command runs directly, so its exit status (a signal, say) is the program's own,
    not a shell's; anything with shell syntax goes through /bin/sh."""
    if _SHELL_SYNTAX.search(command) is None:
        try:
            return shlex.split(command)
        except ValueError:
            pass
    return ["/bin/sh", "-c", command]


def grace_seconds(command: str) -> int:
    return DISTRIBUTED_GRACE_SECONDS if _DISTRIBUTED.search(command) else GRACE_SECONDS


def child_env(paths: ExperimentPaths, session: Session, run: RunPaths, seconds: int, deadline: float, slot: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AR_")}  # never inherit stale AR_* values
    env.setdefault("PYTHONUNBUFFERED", "1")  # metrics reach run.log even when the run is killed
    env.setdefault("WANDB_DIR", str(run.dir.resolve()))  # this run's wandb files, found without guessing
    # The snapshot imports the experiment's prepare.py, and the project's own modules, as the live
    # train.py would from its folder at the project root.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(paths.dir.resolve()), str(paths.root.resolve()), env.get("PYTHONPATH"))))
    if session.experiment.mlflow_tracking_uri:
        env["MLFLOW_TRACKING_URI"] = session.experiment.mlflow_tracking_uri  # the store the mlflow backend reads
    if session.experiment.parent_ckpt:
        env["AR_PARENT_CKPT"] = str((paths.root / session.experiment.parent_ckpt).resolve())
    if session.loop.baseline_repeats > 1 or session.loop.confirm:
        # Repeats and confirmations measure seed noise: a new seed for every run (its number, so
        # the same run id always gets the same one). Otherwise runs of the same code stay alike.
        env["AR_SEED"] = str(run_number(run.run_id) or 0)
    if session.loop.slots > 1:
        env["AR_SLOT"] = str(slot + 1)  # 1..N: which slot runs it
    per_slot = slot_gpus(session)
    if per_slot and session.loop.backend == "local":
        from ar.slots import gpu_devices

        # each slot its own devices (Slurm assigns a job's devices itself)
        env["CUDA_VISIBLE_DEVICES"] = gpu_devices(slot, per_slot, os.environ.get("CUDA_VISIBLE_DEVICES"))
    env.update(
        AR_CKPT_DIR=str(run.ckpt_dir.resolve()),  # where train.py may save its checkpoint
        AR_RUN_ID=run.run_id,

        AR_RUN_DIR=str(run.dir.resolve()),
        AR_EXPR_DIR=str(paths.dir.resolve()),
        AR_SECONDS=str(seconds),
        AR_DEADLINE=f"{deadline:.0f}",
    )
    return env


_PROCESSES = re.compile(r"--(?:nproc[-_]per[-_]node|num[-_]processes|num[-_]gpus)[= ](\d+)")


def slot_gpus(session: Session) -> int:
    """Devices per slot: as set; else, when several slots share the machine, one per process of
    the runner (`--nproc-per-node 2`: 2), so a distributed run never shares a GPU; else 0 (untouched)."""
    if session.loop.gpus_per_slot is not None:
        return session.loop.gpus_per_slot
    if session.loop.slots == 1:
        return 0
    match = _PROCESSES.search(session.experiment.runner)
    return int(match.group(1)) if match else 1


def watch(paths: ExperimentPaths, session: Session, run: RunPaths, seconds: int, on_spawn: Callable[[int], None], slot: int = 0):
    from ar.watchdog import Launch, run_watched

    command = launch_command(paths, session, run)
    deadline = time.time() + seconds
    env = child_env(paths, session, run, seconds, deadline, slot)
    if session.loop.backend == "slurm":
        from ar.backends.run_job import watch_job

        return watch_job(paths, session, run, command, env, seconds, grace_seconds(command), on_spawn)
    launch = Launch(
        argv=launch_argv(command),
        cwd=paths.root,
        env=env,
        log_path=run.log,
        seconds=seconds,
        grace=grace_seconds(command),
        tag=("AR_RUN_DIR", env["AR_RUN_DIR"]),
        process_log=run.process_log,
    )
    return run_watched(launch, on_spawn)


def abandoned_outcome(run: RunPaths):
    """The outcome of a run whose supervisor died: its leftover processes are ended first,
    found by their tag and by the record of processes its supervisor kept."""
    from ar.watchdog import Outcome, end_abandoned

    survivors = end_abandoned(("AR_RUN_DIR", str(run.dir.resolve())), run.process_log, grace=5)
    return Outcome(status="unclean" if survivors else "crash", exit_code=None, wall_seconds=0.0, survivors=survivors, swept=0)
