"""A run as a Slurm job: submitted once, its job id recorded in the run directory, then watched
under ar's own clock by whichever supervisor owns the run (a new one re-attaches by that id)."""

from __future__ import annotations

import shlex
from collections.abc import Callable

from ar.durable import read_json_or_none, write_json_atomic
from ar.layout import ExperimentPaths, RunPaths
from ar.settings import Session


def job_spec(paths: ExperimentPaths, session: Session, run: RunPaths, command: str, env: dict, seconds: int, grace: int):
    from ar.backends.slurm import JobSpec

    extra = shlex.split(session.loop.sbatch_args)
    if session.loop.gpus_per_slot:
        extra.append(f"--gres=gpu:{session.loop.gpus_per_slot}")  # Slurm assigns the job's devices itself
    return JobSpec(command=command, cwd=paths.root, env=env, log_path=run.log.resolve(), run_dir=run.dir.resolve(),
                   seconds=seconds, grace=grace, job_name=f"ar-{paths.slug}-{run.run_id}",
                   partition=session.loop.partition, sbatch_args=extra)


def recorded_job(run: RunPaths) -> dict | None:
    """{"job_id", "seconds"} of the run's job, once sbatch has taken it."""
    job = read_json_or_none(run.job)
    return job if isinstance(job, dict) and isinstance(job.get("job_id"), str) and type(job.get("seconds")) is int else None


def job_started(run: RunPaths) -> float | None:
    """When the job's batch script began (its start marker), for the checkpoint and metric files
    written since; None before it started."""
    from ar.backends.slurm import START_MARKER

    try:
        return float((run.dir / START_MARKER).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def ended_job(paths: ExperimentPaths, session: Session, run: RunPaths):
    """(Outcome, started, seconds) of a job whose supervisor died, once it has ended; None while
    it may still run (or Slurm cannot be asked)."""
    from ar import launch
    from ar.backends import slurm

    job = recorded_job(run)
    if job is None or slurm.alive(job["job_id"]) is not False:
        return None
    command = launch.launch_command(paths, session, run)
    spec = job_spec(paths, session, run, command, {}, job["seconds"], launch.grace_seconds(command))
    outcome = slurm.watch(spec, job["job_id"])  # it has ended: returns at once
    return outcome, job_started(run) or run.dir.stat().st_mtime, job["seconds"]


def watch_job(paths: ExperimentPaths, session: Session, run: RunPaths, command: str, env: dict, seconds: int, grace: int,
              on_spawn: Callable[[int], None]):
    from ar.backends import slurm
    from ar.watchdog import Outcome

    spec = job_spec(paths, session, run, command, env, seconds, grace)
    job = recorded_job(run)  # a new supervisor re-attaches to the job of one that died
    if job is None:
        try:
            job = {"job_id": slurm.submit(spec), "seconds": seconds}
        except slurm.SlurmError as exc:
            with open(run.log, "a", encoding="utf-8") as log:  # `ar tail` shows why
                log.write(f"ar: sbatch failed: {exc}\n")
            return Outcome(status="crash", exit_code=None, wall_seconds=0.0, survivors=[], swept=0)
        write_json_atomic(run.job, job)
    on_spawn(0)
    return slurm.watch(spec._replace(seconds=job["seconds"]), job["job_id"])
