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


def recorded_job(run: RunPaths) -> str | None:
    job = read_json_or_none(run.job)
    return job["job_id"] if isinstance(job, dict) and isinstance(job.get("job_id"), str) else None


def watch_job(paths: ExperimentPaths, session: Session, run: RunPaths, command: str, env: dict, seconds: int, grace: int,
              on_spawn: Callable[[int], None]):
    from ar.backends import slurm
    from ar.watchdog import Outcome

    spec = job_spec(paths, session, run, command, env, seconds, grace)
    job_id = recorded_job(run)
    if job_id is None:
        try:
            job_id = slurm.submit(spec)
        except slurm.SlurmError as exc:
            with open(run.log, "a", encoding="utf-8") as log:  # `ar tail` shows why
                log.write(f"ar: sbatch failed: {exc}\n")
            return Outcome(status="crash", exit_code=None, wall_seconds=0.0, survivors=[], swept=0)
        write_json_atomic(run.job, {"job_id": job_id})
    on_spawn(0)
    return slurm.watch(spec, job_id)
